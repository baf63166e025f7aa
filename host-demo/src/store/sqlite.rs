//! The host's message store: SQLite, one file per tenant configuration.
//!
//! Messages are inserted inside a transaction that `commit` closes with `synchronous = FULL`,
//! so `stored` is only sent to the guest once they are on disk. Deduplication never
//! acknowledges a message it did not store: a delivery is a duplicate only when the same
//! server (protocol, host, port, user: the `source`) already gave a message that server id
//! ("imap:<folder>:<uidvalidity>:<uid>" / "pop3:<uidl>"), or when a message with the same
//! Message-ID *and* the same bytes (SHA-256) is stored. The SHA-256 is computed when a stored
//! row has the Message-ID (and filled in for that row if it has none yet); the bytes in the
//! segments are checked with a CRC-32 when read back. A different message that reuses a
//! stored Message-ID is stored as its own row, flagged `mid_collision`. So at-least-once
//! delivery from the guest becomes exactly-once in the store, and nothing is lost to a forged
//! Message-ID.
//!
//! Each row also records whether it was `reported` as new (by `fetch`): a run that fails or is
//! killed after storing leaves its rows unreported, and the next run reports them.
//!
//! Each message's raw bytes are written once, outside SQLite, to an append-only segment file
//! synced before the commit that refers to it (`segments`), followed by its text and HTML
//! bodies (since version 4), so the row SQLite writes (and `mark_reported` rewrites) holds
//! only metadata; rows of earlier versions keep their bytes in `raw` and bodies in the row.
//! Attachments are recorded by name, type and size only (their content is in the raw
//! message), so a commit syncs little more than the bytes fetched.

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension};

use crate::engine::Tokens;
use crate::error::HostError;
use crate::store::{SavedState, SyncStateStore};

pub(crate) mod events;
mod migrate;
mod outbox;
mod query;
mod segments;
mod sink;
mod writer;

pub use migrate::content_hash;
pub use query::{MessageDetail, MessageSummary, StoredAttachment};
pub use segments::folder as raw_folder;
pub use sink::{classification_name, DbSink, Delivered, SinkStats};

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
    -- SHA-256 of raw, hex: with the Message-ID, what makes two deliveries the same. Since
    -- version 4 computed only when another row has the same Message-ID (NULL until then).
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
    -- The message as received, or empty when it is in a segment file (raw_segment).
    raw             BLOB NOT NULL,
    stored_at_ms    INTEGER NOT NULL,
    -- Where the raw bytes are when not in `raw` (version 3): `size` bytes at raw_offset in
    -- <database>-raw/<raw_segment, 6 digits>.seg. NULL for rows that keep them in `raw`.
    raw_segment     INTEGER,
    raw_offset      INTEGER,
    -- Version 4: the text and HTML bodies follow the raw bytes in the segment (text_len bytes,
    -- then html_len bytes, NULL when the message has no such body) instead of text_body and
    -- html_body, checked by body_check (CRC-32 of both). NULL for rows that keep them in the row.
    -- (No semicolons in these comments: the migration splits this text at them.)
    text_len        INTEGER,
    html_len        INTEGER,
    body_check      INTEGER,
    -- Version 4: CRC-32 of the raw bytes, checked when they are read back from the segment.
    raw_check       INTEGER,
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

fn connect(path: &Path) -> Result<Connection, HostError> {
    let conn = Connection::open(path)
        .map_err(|e| HostError::Storage(format!("cannot open the database {}: {e}", path.display())))?;
    // 16 KB pages (only takes effect when the file is created): a message of tens of kilobytes
    // spans a few overflow pages instead of a chain of 4 KB ones, and unlike 64 KB pages, where
    // a 33 KB row leaves half of its page empty, the WAL (and so the fsync at each commit)
    // stays close to the size of the data. Measured in docs/BENCHMARKS.md.
    // No automatic checkpoints: SQLite would run them inside a COMMIT (the writer's, while the
    // session waits for `stored`, or the sync-state save right after it). The sink's writer
    // checkpoints after it answered a commit (`writer::CHECKPOINT_EVERY`), and closing the last
    // connection checkpoints what is left.
    conn.execute_batch(
        "PRAGMA page_size = 16384; PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000; PRAGMA wal_autocheckpoint = 0;",
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
    /// Inside `writing` (a write does not take a second turn from the writer).
    writing: std::cell::Cell<bool>,
}

/// Where a row's raw bytes are when they are in a segment (`segments`), and what checks them.
pub(super) struct RawAt {
    pub(super) segment: i64,
    pub(super) offset: i64,
    pub(super) size: i64,
    /// SHA-256, hex (rows of version 3, and of version 4 when a Message-ID match computed it).
    pub(super) hash: Option<String>,
    /// CRC-32 of the bytes (version 4).
    pub(super) check: Option<i64>,
}

impl RawAt {
    /// From the columns raw_segment, raw_offset, size, content_hash, raw_check starting at
    /// `first`; None for a row that keeps its bytes in `raw`.
    pub(super) fn from_row(r: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<Option<RawAt>> {
        let segment: Option<i64> = r.get(first)?;
        Ok(match segment {
            Some(segment) => Some(RawAt {
                segment,
                offset: r.get(first + 1)?,
                size: r.get(first + 2)?,
                hash: r.get(first + 3)?,
                check: r.get(first + 4)?,
            }),
            None => None,
        })
    }
}

/// Where a row's bodies are when they follow its raw bytes in a segment (version 4).
pub(super) struct BodiesAt {
    pub(super) segment: i64,
    pub(super) offset: i64,
    /// The raw bytes' length: the bodies start after them.
    pub(super) size: i64,
    pub(super) text_len: Option<i64>,
    pub(super) html_len: Option<i64>,
    pub(super) check: i64,
}

impl BodiesAt {
    /// From the columns raw_segment, raw_offset, size, text_len, html_len, body_check starting
    /// at `first`; None for a row that keeps its bodies in text_body and html_body.
    pub(super) fn from_row(r: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<Option<BodiesAt>> {
        let (segment, check): (Option<i64>, Option<i64>) = (r.get(first)?, r.get(first + 5)?);
        Ok(match (segment, check) {
            (Some(segment), Some(check)) => Some(BodiesAt {
                segment,
                offset: r.get(first + 1)?,
                size: r.get(first + 2)?,
                text_len: r.get(first + 3)?,
                html_len: r.get(first + 4)?,
                check,
            }),
            _ => None,
        })
    }
}

/// The raw bytes of row `id` (of `tenant`, when given) on `conn` of the database at `path`:
/// from the row's `raw` column or from its segment file, checked. None: no such row.
pub(super) fn raw_bytes(conn: &Connection, path: &Path, tenant: Option<&str>, id: i64) -> Result<Option<Vec<u8>>, HostError> {
    let found: Option<(Vec<u8>, Option<RawAt>)> = conn
        .query_row(
            "SELECT raw, raw_segment, raw_offset, size, content_hash, raw_check FROM messages WHERE id = ?1 AND (?2 IS NULL OR tenant = ?2)",
            params![id, tenant],
            |row| Ok((row.get(0)?, RawAt::from_row(row, 1)?)),
        )
        .optional()
        .map_err(db_err("reading a message"))?;
    match found {
        Some((_, Some(at))) => segments::read(path, id, &at).map(Some),
        Some((raw, None)) => Ok(Some(raw)),
        None => Ok(None),
    }
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
        // The schema statements may write: not against this process's open batch.
        let _turn = writer::turn(path)?;
        let mut conn = connect(path)?;
        conn.execute_batch(SCHEMA).map_err(db_err("database schema"))?;
        migrate::migrate(&mut conn)?;
        conn.execute_batch(INDEXES).map_err(db_err("database schema"))?;
        // The outbox and the events (issue 13): new tables, no schema version change.
        conn.execute_batch(outbox::SCHEMA).and_then(|_| conn.execute_batch(events::SCHEMA)).map_err(db_err("database schema"))?;
        Ok(Database { conn, path: path.to_path_buf(), keys, writing: std::cell::Cell::new(false) })
    }

    /// Runs a write on this connection during a turn of the database's writer (`writer::turn`):
    /// what the writer had open is committed first and it waits until `f` is done, so `f` never
    /// waits for the lock of a transaction of this process (the sinks'); only another process
    /// can make it wait (the busy timeout).
    fn writing<T>(&self, f: impl FnOnce() -> Result<T, HostError>) -> Result<T, HostError> {
        if self.writing.get() {
            return f();
        }
        let _turn = writer::turn(&self.path)?;
        self.writing.set(true);
        let result = f();
        self.writing.set(false);
        result
    }

    /// A sink that stores one mailbox's deliveries into this database. Inserts run on a
    /// writer thread with its own connection, so storing overlaps with fetching and parsing;
    /// `commit` waits until everything delivered so far is committed to disk.
    pub fn sink(&self, tenant: &str, mailbox: &str) -> DbSink<'_> {
        DbSink::new(self, tenant, mailbox)
    }

    /// Every stored message of a mailbox, in insertion order.
    pub fn messages(&self, tenant: &str, mailbox: &str) -> Result<Vec<StoredMessage>, HostError> {
        let mut st = self
            .conn
            .prepare(
                "SELECT server_id, folder, message_id, subject, classification, parse_error, raw,
                        (SELECT COUNT(*) FROM attachments a WHERE a.message = m.id), id, mid_collision, reported,
                        raw_segment, raw_offset, size, content_hash, raw_check
                 FROM messages m WHERE tenant = ?1 AND mailbox = ?2 ORDER BY id",
            )
            .map_err(db_err("reading messages"))?;
        let rows = st
            .query_map(params![tenant, mailbox], |r| {
                let at = RawAt::from_row(r, 11)?;
                let m = StoredMessage {
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
                };
                Ok((m, at))
            })
            .map_err(db_err("reading messages"))?;
        let rows = rows.collect::<Result<Vec<_>, _>>().map_err(db_err("reading messages"))?;
        rows.into_iter()
            .map(|(mut m, at)| {
                self.load_raw(m.row, &mut m.raw, at)?;
                Ok(m)
            })
            .collect()
    }

    /// The raw bytes of the message with database id `id` (of `tenant`, when given), exactly
    /// as fetched: from the row's `raw` column or, for messages stored since schema version 3,
    /// from its segment file, checked against the row's SHA-256. None: no such message.
    fn raw_of(&self, tenant: Option<&str>, id: i64) -> Result<Option<Vec<u8>>, HostError> {
        raw_bytes(&self.conn, &self.path, tenant, id)
    }

    /// Fills `raw` (read from the row's `raw` column) from its segment when the row keeps its
    /// bytes there.
    fn load_raw(&self, row: i64, raw: &mut Vec<u8>, at: Option<RawAt>) -> Result<(), HostError> {
        if let Some(at) = at {
            *raw = segments::read(&self.path, row, &at)?;
        }
        Ok(())
    }

    /// A stored message named explicitly: `db:17` (its database id), `mid:<id@host>` or
    /// `<id@host>` (its Message-ID), or its server id (`imap:...`, `pop3:...`). A bare number or
    /// other text is refused, since it could be read more than one way; so is a reference that
    /// matches several messages (a Message-ID reused by another message, or a server id of two
    /// servers), with the candidates listed. Returns (mailbox, raw bytes).
    pub fn find(&self, tenant: &str, reference: &str) -> Result<(String, Vec<u8>), HostError> {
        let reference = reference.trim();
        let r = crate::store::MessageRef::parse(reference)?;
        let value: rusqlite::types::Value = match &r {
            crate::store::MessageRef::Id(id) => (*id).into(),
            crate::store::MessageRef::MessageId(v) | crate::store::MessageRef::ServerId(v) => v.clone().into(),
        };
        let mut st = self
            .conn
            .prepare(&format!(
                "SELECT id, mailbox, server_id, from_addr, subject FROM messages WHERE tenant = ?1 AND {} = ?2 ORDER BY id LIMIT 11",
                r.column()
            ))
            .map_err(db_err("finding a message"))?;
        let found: Vec<crate::store::RefCandidate> = st
            .query_map(params![tenant, value], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?)))
            .map_err(db_err("finding a message"))?
            .collect::<Result<_, _>>()
            .map_err(db_err("finding a message"))?;
        match found.as_slice() {
            [(id, mailbox, ..)] => {
                let raw = self.raw_of(None, *id)?.ok_or_else(|| crate::store::reference_error(reference, tenant, &[]))?;
                Ok((mailbox.clone(), raw))
            }
            other => Err(crate::store::reference_error(reference, tenant, other)),
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
                        CASE WHEN ?3 THEN raw ELSE X'' END, raw_segment, raw_offset, size, content_hash, raw_check
                 FROM messages WHERE tenant = ?1 AND mailbox = ?2 AND reported = 0 ORDER BY id",
            )
            .map_err(db_err("reading unreported messages"))?;
        let rows = st
            .query_map(params![tenant, mailbox, with_raw], |r| {
                let at = if with_raw { RawAt::from_row(r, 10)? } else { None };
                let u = Unreported {
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
                };
                Ok((u, at))
            })
            .map_err(db_err("reading unreported messages"))?;
        let rows = rows.collect::<Result<Vec<_>, _>>().map_err(db_err("reading unreported messages"))?;
        rows.into_iter()
            .map(|(mut u, at)| {
                self.load_raw(u.row, &mut u.raw, at)?;
                Ok(u)
            })
            .collect()
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
        self.writing(|| {
            self.conn.execute_batch("PRAGMA synchronous = NORMAL").map_err(db_err("database settings"))?;
            let result = f(&self.conn);
            self.conn.execute_batch("PRAGMA synchronous = FULL").map_err(db_err("database settings"))?;
            result
        })
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
        crate::tokens::load(&self.conn, &self.keys, tenant, client, username)
    }

    fn save_tokens(&self, tenant: &str, client: &str, username: &str, t: &Tokens) -> Result<(), HostError> {
        self.writing(|| crate::tokens::save(&self.conn, &self.keys, tenant, client, username, t))
    }

    fn token_storage_ready(&self) -> Result<(), HostError> {
        self.keys.ready()
    }
}

#[cfg(test)]
mod tests;
