//! Storing one mailbox's deliveries in PostgreSQL, with the SQLite store's rules
//! (`store::sqlite` module doc): a delivery is a duplicate only when the same server (`source`)
//! already gave a message that server id, or when a message with the same Message-ID and the
//! same bytes (SHA-256) is stored; a different message reusing a stored Message-ID is stored as
//! its own row, flagged `mid_collision`. Raw bytes go into `bytea`.
//!
//! Deliveries are kept in memory and written at `commit` in one transaction (with their
//! `message.stored` events), so `stored` is only sent to the guest once they are committed. A
//! batch costs a few round trips whatever its size: its dedup lookups are two queries, and its
//! inserts are pipelined on the connection. So
//! that memory stays bounded, a batch that grows past `FLUSH_BYTES` is written in a transaction
//! of its own before the driver's commit (committing early is safe: the server still has the
//! messages, and storing is idempotent). In a fenced view every transaction first checks the
//! lease (`lease::Fence::check`); once the lease is lost nothing more is written and `commit`
//! fails with `LeaseLost`, so the guest never acknowledges (or deletes) what a node no longer
//! owning the mailbox delivered.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::future::try_join_all;
use tokio_postgres::types::ToSql;

use super::lease::Fence;
use super::{pg_err, pg_opt_text, pg_text, Db, PgStore};
use crate::driver::MessageSink;
use crate::engine::{FetchedMessage, SkippedMessage};
use crate::error::HostError;
use crate::store::events::MESSAGE_STORED;
use crate::store::sqlite::{classification_name, content_hash, Delivered, SinkStats};

/// Past this many bytes of deliveries held, they are written before the driver's commit.
const FLUSH_BYTES: usize = 32 << 20;

/// Stores one mailbox's deliveries; see `PgStore::sink`.
pub struct PgSink {
    store: PgStore,
    tenant: String,
    mailbox: String,
    source: String,
    pending: Vec<Pending>,
    pending_bytes: usize,
    /// Results of batches written early (`FLUSH_BYTES`), handed out at the next `commit`.
    flushed: Vec<Delivered>,
    /// After each `commit`: what became of each delivery since the previous commit.
    pub results: Vec<Delivered>,
    pub stats: SinkStats,
}

enum Pending {
    Message(FetchedMessage),
    Skipped(SkippedMessage),
}

impl PgSink {
    pub(super) fn new(store: PgStore, tenant: &str, mailbox: &str) -> PgSink {
        PgSink {
            store,
            tenant: tenant.to_string(),
            mailbox: mailbox.to_string(),
            source: String::new(),
            pending: Vec::new(),
            pending_bytes: 0,
            flushed: Vec::new(),
            results: Vec::new(),
            stats: SinkStats::default(),
        }
    }

    /// Writes what is pending in one transaction; returns what each delivery did.
    fn write(&mut self) -> Result<Vec<Delivered>, HostError> {
        if self.pending.is_empty() {
            return Ok(Vec::new());
        }
        let batch = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        let (tenant, mailbox, source, fence) = (self.tenant.clone(), self.mailbox.clone(), self.source.clone(), self.store.fence.clone());
        self.store.wait(|db| async move { write_batch(db, fence, tenant, mailbox, source, batch).await })
    }
}

async fn write_batch(
    db: Arc<Db>,
    fence: Option<Fence>,
    tenant: String,
    mailbox: String,
    source: String,
    batch: Vec<Pending>,
) -> Result<Vec<Delivered>, HostError> {
    let mut c = db.client().await?;
    let tx = c.transaction().await.map_err(pg_err("starting a transaction"))?;
    if let Some(f) = &fence {
        f.check(&tx).await?;
    }
    let token = fence.as_ref().map(|f| f.token);
    let now = crate::driver::now_ms() as i64;
    let mut known = Known::load(&tx, &tenant, &mailbox, &source, &batch).await?;
    // Decide every delivery first (in order, so a batch's own duplicates are recognised; a row
    // this batch inserts has the placeholder id -(its index + 1) until it is written).
    let mut results = Vec::new();
    let mut rows: Vec<NewRow<'_>> = Vec::new();
    for job in &batch {
        let Pending::Message(m) = job else { continue };
        let hash = content_hash(&m.raw);
        let server_id = pg_text(&m.id).into_owned();
        let message_id = stored_message_id(m, &hash);
        let dup = known.by_server.get(&server_id).copied().or_else(|| {
            // The earliest row with the same bytes.
            known.by_mid.get(&message_id).and_then(|rs| rs.iter().find(|r| r.1 == hash)).map(|r| (r.0, r.2, r.3))
        });
        if let Some((row, reported, collision)) = dup {
            results.push(Delivered { id: m.id.clone(), row, new: false, reported, collision });
            continue;
        }
        // Another stored message has this Message-ID with other bytes.
        let collision = known.by_mid.get(&message_id).is_some_and(|rs| !rs.is_empty());
        let placeholder = -(rows.len() as i64 + 1);
        known.by_server.insert(server_id.clone(), (placeholder, false, collision));
        known.by_mid.entry(message_id.clone()).or_default().push((placeholder, hash.clone(), false, collision));
        results.push(Delivered { id: m.id.clone(), row: placeholder, new: true, reported: false, collision });
        rows.push(NewRow::new(m, server_id, message_id, hash, collision));
    }
    // The inserts, sent together: tokio-postgres pipelines the statements of one connection,
    // so the batch costs about one round trip instead of one per message.
    let ins = tx
        .prepare_cached(
            "INSERT INTO messages (tenant, mailbox, source, server_id, folder, message_id, message_id_synthetic, content_hash,
                mid_collision, subject, from_addr, date_ms, classification, parse_error, text_body, html_body, size, raw,
                stored_at_ms, token)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)
             ON CONFLICT (tenant, mailbox, source, server_id) DO NOTHING
             RETURNING id",
        )
        .await
        .map_err(pg_err("storing a message"))?;
    let params: Vec<Vec<&(dyn ToSql + Sync)>> = rows
        .iter()
        .map(|r| -> Vec<&(dyn ToSql + Sync)> {
            vec![
                &tenant, &mailbox, &source, &r.server_id, &r.folder, &r.message_id, &r.synthetic, &r.hash, &r.collision, &r.subject,
                &r.from, &r.date_ms, &r.classification, &r.parse_error, &r.text, &r.html, &r.size, &r.m.raw, &now, &token,
            ]
        })
        .collect();
    let inserted = try_join_all(params.iter().map(|p| tx.query_opt(&ins, p.as_slice()))).await.map_err(pg_err("storing a message"))?;
    let mut ids = Vec::with_capacity(rows.len());
    for (r, got) in rows.iter().zip(inserted) {
        ids.push(match got {
            Some(row) => Some(row.get::<_, i64>(0)),
            None => {
                // Another writer stored the same server id meanwhile (only without leases).
                let row = tx
                    .query_one(
                        "SELECT id, reported, mid_collision FROM messages WHERE tenant = $1 AND mailbox = $2 AND source = $3 AND server_id = $4",
                        &[&tenant, &mailbox, &source, &r.server_id],
                    )
                    .await
                    .map_err(pg_err("looking up a message"))?;
                let d = Delivered { id: r.m.id.clone(), row: row.get(0), new: false, reported: row.get(1), collision: row.get(2) };
                for x in results.iter_mut().filter(|x| x.row == -(ids.len() as i64 + 1)) {
                    *x = Delivered { id: x.id.clone(), ..d.clone() };
                }
                None
            }
        });
    }
    // Placeholders become the rows' ids.
    for d in &mut results {
        if d.row < 0 {
            if let Some(Some(id)) = ids.get((-d.row - 1) as usize) {
                d.row = *id;
            }
        }
    }
    // Attachments by name, type and size only (the content is in the raw message).
    let att = tx
        .prepare_cached("INSERT INTO attachments (message, position, name, media_type, size, content_id) VALUES ($1, $2, $3, $4, $5, $6)")
        .await
        .map_err(pg_err("storing an attachment"))?;
    let mut attachments = Vec::new();
    for (r, id) in rows.iter().zip(&ids) {
        let (Some(id), Ok(p)) = (id, &r.m.parsed) else { continue };
        for (i, a) in p.attachments.iter().enumerate() {
            attachments.push((*id, i as i32, pg_opt_text(&a.name), pg_text(&a.media_type).into_owned(), a.size as i64, pg_opt_text(&a.content_id)));
        }
    }
    let params: Vec<[&(dyn ToSql + Sync); 6]> = attachments
        .iter()
        .map(|(id, i, name, media, size, cid)| -> [&(dyn ToSql + Sync); 6] { [id, i, name, media, size, cid] })
        .collect();
    try_join_all(params.iter().map(|p| tx.execute(&att, p.as_slice())))
        .await
        .map_err(pg_err("storing an attachment"))?;
    for job in &batch {
        if let Pending::Skipped(s) = job {
            tx.execute(
                "INSERT INTO skipped (tenant, mailbox, server_id, folder, size, reason) VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT DO NOTHING",
                &[&tenant, &mailbox, &pg_text(&s.id), &pg_text(&s.folder), &(s.size as i64), &pg_text(&s.reason)],
            )
            .await
            .map_err(pg_err("recording a skipped message"))?;
        }
    }
    // Each new row's `message.stored` event, last (events::append holds the tenant's lock).
    let events: Vec<(&str, serde_json::Value)> = rows
        .iter()
        .zip(&ids)
        .filter_map(|(r, id)| id.map(|id| (MESSAGE_STORED, r.event(id, &mailbox))))
        .collect();
    super::events::append(&tx, &tenant, &events, now).await?;
    tx.commit().await.map_err(pg_err("committing"))?;
    Ok(results)
}

/// A new row's values, owned so that all inserts can be in flight at once.
struct NewRow<'a> {
    m: &'a FetchedMessage,
    server_id: String,
    message_id: String,
    hash: String,
    collision: bool,
    folder: String,
    synthetic: bool,
    subject: Option<String>,
    from: Option<String>,
    date_ms: Option<i64>,
    classification: &'static str,
    parse_error: Option<String>,
    text: Option<String>,
    html: Option<String>,
    size: i64,
}

impl<'a> NewRow<'a> {
    fn new(m: &'a FetchedMessage, server_id: String, message_id: String, hash: String, collision: bool) -> NewRow<'a> {
        let (synthetic, subject, from, date_ms, classification, parse_error, text, html) = match &m.parsed {
            Ok(p) => {
                let from = p.from.first().map(|a| match &a.name {
                    Some(n) => format!("{n} <{}>", a.address),
                    None => a.address.clone(),
                });
                (
                    p.message_id_synthetic,
                    pg_opt_text(&p.subject),
                    pg_opt_text(&from),
                    p.date_ms,
                    classification_name(p.classification),
                    None,
                    pg_opt_text(&p.text_body),
                    pg_opt_text(&p.html_body),
                )
            }
            Err(why) => (true, None, None, None, "normal", Some(pg_text(why).into_owned()), None, None),
        };
        NewRow {
            m,
            server_id,
            message_id,
            hash,
            collision,
            folder: pg_text(&m.folder).into_owned(),
            synthetic,
            subject,
            from,
            date_ms,
            classification,
            parse_error,
            text,
            html,
            size: m.raw.len() as i64,
        }
    }

    /// Its `message.stored` event (the SQLite store's payload).
    fn event(&self, row: i64, mailbox: &str) -> serde_json::Value {
        let m = self.m;
        let (subject, from) = m.parsed.as_ref().map_or((None, None), |p| (p.subject.as_deref(), p.from.first().map(|a| a.address.as_str())));
        serde_json::json!({"message": format!("db:{row}"), "mailbox": mailbox, "server_id": m.id, "folder": m.folder,
            "message_id": self.message_id, "subject": subject, "from": from, "size": m.raw.len(), "mid_collision": self.collision})
    }
}

/// The Message-ID a message is stored under.
fn stored_message_id(m: &FetchedMessage, hash: &str) -> String {
    match &m.parsed {
        Ok(p) => pg_text(&p.message_id).into_owned(),
        // Unparseable: stored raw with the reason, under a Message-ID made from its content
        // (the SHA-256; the SQLite store keeps its older FNV form).
        Err(_) => format!("unparsed-{}@mailplug.invalid", &hash[..32]),
    }
}

/// The stored rows a batch's deduplication looks at, read with two queries per batch instead
/// of two per message, and kept up to date as the batch inserts.
struct Known {
    /// Server id (of this source) -> (row, reported, mid_collision).
    by_server: HashMap<String, (i64, bool, bool)>,
    /// Message-ID -> rows with it, oldest first: (row, content hash, reported, mid_collision).
    by_mid: HashMap<String, Vec<(i64, String, bool, bool)>>,
}

impl Known {
    async fn load(
        tx: &deadpool_postgres::Transaction<'_>,
        tenant: &str,
        mailbox: &str,
        source: &str,
        batch: &[Pending],
    ) -> Result<Known, HostError> {
        let mut ids = Vec::new();
        let mut mids = Vec::new();
        for job in batch {
            if let Pending::Message(m) = job {
                ids.push(pg_text(&m.id).into_owned());
                mids.push(stored_message_id(m, &content_hash(&m.raw)));
            }
        }
        let mut known = Known { by_server: HashMap::new(), by_mid: HashMap::new() };
        if ids.is_empty() {
            return Ok(known);
        }
        let rows = tx
            .query(
                "SELECT server_id, id, reported, mid_collision FROM messages
                 WHERE tenant = $1 AND mailbox = $2 AND source = $3 AND server_id = ANY($4)",
                &[&tenant, &mailbox, &source, &ids],
            )
            .await
            .map_err(pg_err("looking up messages"))?;
        for r in rows {
            known.by_server.insert(r.get(0), (r.get(1), r.get(2), r.get(3)));
        }
        let rows = tx
            .query(
                "SELECT message_id, id, content_hash, reported, mid_collision FROM messages
                 WHERE tenant = $1 AND mailbox = $2 AND message_id = ANY($3) ORDER BY id",
                &[&tenant, &mailbox, &mids],
            )
            .await
            .map_err(pg_err("looking up messages"))?;
        for r in rows {
            known.by_mid.entry(r.get(0)).or_default().push((r.get(1), r.get(2), r.get(3), r.get(4)));
        }
        Ok(known)
    }
}

impl MessageSink for PgSink {
    fn deliver(&mut self, mut m: FetchedMessage) -> Result<(), HostError> {
        self.stats.bytes += m.raw.len() as u64;
        // Attachments are not stored (see `insert`): their bytes are freed here.
        let size = crate::store::without_attachment_bytes(&mut m);
        self.pending.push(Pending::Message(m));
        self.pending_bytes += size;
        if self.pending_bytes >= FLUSH_BYTES {
            let done = self.write()?;
            self.flushed.extend(done);
        }
        Ok(())
    }

    fn skipped(&mut self, s: SkippedMessage) -> Result<(), HostError> {
        self.stats.skipped += 1;
        self.pending.push(Pending::Skipped(s));
        Ok(())
    }

    fn source(&mut self, server: &str) {
        self.source = server.to_string();
    }

    fn commit(&mut self) -> Result<(), HostError> {
        self.results.clear();
        let mut done = std::mem::take(&mut self.flushed);
        done.extend(self.write()?);
        for d in &done {
            if d.new {
                self.stats.stored += 1;
            } else {
                self.stats.duplicates += 1;
            }
        }
        self.results = done;
        Ok(())
    }
}
