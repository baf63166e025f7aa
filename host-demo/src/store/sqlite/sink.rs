//! Storing mailboxes' deliveries: through the database's writer thread (`writer`: one per
//! database in this process, shared by its sinks), one transaction per batch committed before
//! `stored`, deduplication that never drops a message it did not store.

use std::sync::atomic::Ordering;
use std::sync::mpsc::sync_channel;
use std::sync::Arc;

use rusqlite::{params, OptionalExtension};

use super::segments;
use super::writer::{stopped, writer_for, Job, SinkState, Writer, WriterState};
use super::{content_hash, db_err, Database};
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
    /// Commits the session waited for, and how long in all (benchmarks: docs/BENCHMARKS.md).
    pub commits: u32,
    pub commit_wait: std::time::Duration,
    /// How long deliveries waited for room in the writer's backlog.
    pub backlog_wait: std::time::Duration,
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

/// The classification as stored and printed: normal, auto-reply, bulk, bounce.
pub fn classification_name(c: Classification) -> &'static str {
    match c {
        Classification::Normal => "normal",
        Classification::AutoReply => "auto-reply",
        Classification::Bulk => "bulk",
        Classification::Bounce => "bounce",
    }
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
    pub(super) fn insert(&mut self, sink: u64, m: &FetchedMessage) -> Result<Delivered, HostError> {
        self.begin()?;
        let now = crate::driver::now_ms() as i64;
        let c = &self.conn;
        let s = self.sinks.get(&sink).ok_or_else(stopped)?;
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
        // The stored messages with this Message-ID, oldest first: a duplicate when one has the
        // same bytes, else this message collides with them. The SHA-256 that decides is only
        // computed here, when there is a row to compare with (most messages have none), and
        // filled in for rows stored without it.
        // Sorted here, not with ORDER BY: with it SQLite prepared the cached statement again at
        // every execution (half of the writer's instructions, docs/BENCHMARKS.md).
        let mut same_mid: Vec<(i64, bool, bool, Option<String>)> = c
            .prepare_cached("SELECT id, reported, mid_collision, content_hash FROM messages WHERE tenant = ?1 AND mailbox = ?2 AND message_id = ?3")
            .and_then(|mut st| {
                st.query_map(params![s.tenant, s.mailbox, message_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                    .collect()
            })
            .map_err(db_err("looking up a message"))?;
        same_mid.sort_unstable_by_key(|r| r.0);
        let collision = !same_mid.is_empty();
        let hash = if collision { Some(content_hash(&m.raw)) } else { None };
        for (row, reported, row_collision, stored) in same_mid {
            let stored = match stored {
                Some(h) => Some(h),
                None => self.fill_in_hash(row),
            };
            if stored.is_some() && stored == hash {
                return Ok(done(row, false, reported, row_collision));
            }
        }
        let s = self.sinks.get(&sink).ok_or_else(stopped)?;
        let c = &self.conn;
        let raw_check = segments::crc_check(&[&m.raw]);
        // The bytes first (synced at commit, before the row that refers to them), the row after.
        // The bodies follow the raw bytes in the segment, so the row holds only metadata.
        let (text, html) = match &m.parsed {
            Ok(p) => (p.text_body.as_deref().map(str::as_bytes), p.html_body.as_deref().map(str::as_bytes)),
            Err(_) => (None, None),
        };
        let (text_b, html_b) = (text.unwrap_or_default(), html.unwrap_or_default());
        let (segment, offset) = self.segments.append(&[&m.raw, text_b, html_b])?;
        let check = segments::crc_check(&[text_b, html_b]);
        let (text_len, html_len) = (text.map(|b| b.len() as i64), html.map(|b| b.len() as i64));
        match &m.parsed {
            Ok(p) => {
                let from = p.from.first().map(|a| match &a.name {
                    Some(n) => format!("{n} <{}>", a.address),
                    None => a.address.clone(),
                });
                c.prepare_cached(
                    "INSERT INTO messages (tenant, mailbox, source, server_id, folder, message_id, message_id_synthetic,
                        content_hash, mid_collision, subject, from_addr, date_ms, classification, parse_error,
                        size, raw, stored_at_ms, raw_segment, raw_offset, text_len, html_len, body_check, raw_check)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, NULL, ?14, X'', ?15, ?16, ?17, ?18, ?19, ?20, ?21)",
                )
                .and_then(|mut st| {
                    st.execute(params![
                        s.tenant, s.mailbox, s.source, m.id, m.folder, message_id, p.message_id_synthetic, hash,
                        collision, p.subject, from, p.date_ms, classification_name(p.classification), m.raw.len() as i64,
                        now, segment, offset as i64, text_len, html_len, check, raw_check
                    ])
                })
                .map_err(db_err("storing a message"))?;
            }
            Err(why) => {
                c.execute(
                    "INSERT INTO messages (tenant, mailbox, source, server_id, folder, message_id, message_id_synthetic,
                        content_hash, mid_collision, classification, parse_error, size, raw, stored_at_ms, raw_segment, raw_offset,
                        body_check, raw_check)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, 1, ?7, ?8, 'normal', ?9, ?10, X'', ?11, ?12, ?13, ?14, ?15)",
                    params![
                        s.tenant, s.mailbox, s.source, m.id, m.folder, message_id, hash, collision, why, m.raw.len() as i64,
                        now, segment, offset as i64, check, raw_check
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

    /// The SHA-256 of a stored row that was stored without one (schema 4 computes it only
    /// when needed), computed from its bytes (checked against the row's CRC-32) and saved in
    /// the row. None when the bytes cannot be read: the new message is then kept as a
    /// collision rather than taken for a duplicate of bytes no one can compare.
    fn fill_in_hash(&mut self, row: i64) -> Option<String> {
        // The row may be of this transaction, its bytes still gathered in the writer's buffer.
        self.segments.write_pending().ok()?;
        let raw = super::raw_bytes(&self.conn, &self.database, None, row).ok()??;
        let hash = content_hash(&raw);
        self.conn.execute("UPDATE messages SET content_hash = ?1 WHERE id = ?2", params![hash, row]).ok()?;
        Some(hash)
    }

    /// Asks the kernel to start writing the WAL to disk now, without waiting: SQLite fills the
    /// WAL as the transaction grows, and the fsync at `COMMIT` then finds most of it already
    /// written instead of flushing the whole batch while the session waits. Durability is
    /// unchanged: `COMMIT` still syncs.
    pub(super) fn start_writeback(&mut self) {
        if self.wal.is_none() {
            self.wal = self.conn.path().and_then(|p| std::fs::File::open(format!("{p}-wal")).ok());
        }
        if let Some(f) = &self.wal {
            segments::start_writeback(f);
        }
    }

    pub(super) fn skipped(&mut self, sink: u64, s: &SkippedMessage) -> Result<(), HostError> {
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
        // Attachments are not stored (see `insert`): their bytes are freed here.
        let size = crate::store::without_attachment_bytes(&mut m);
        let (writer, k) = self.writer()?;
        let waited = writer.backlog.admit(size, writer)?;
        writer.send(Job::Deliver(k, m, size))?;
        self.stats.backlog_wait += waited;
        Ok(())
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
        let started = std::time::Instant::now();
        let (answer, result) = sync_channel(1);
        let (writer, k) = self.writer()?;
        writer.send(Job::Commit(k, answer))?;
        self.results = result.recv().map_err(|_| stopped())??;
        self.stats.commits += 1;
        self.stats.commit_wait += started.elapsed();
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
