//! Read-only listings for the service's API: a tenant's stored messages page by page, and one
//! message with the fields the component parsed (the bodies read from the message's segment
//! for rows of version 4). Nothing here writes.

use rusqlite::{params, OptionalExtension};

use super::{db_err, Database};
use crate::error::HostError;

/// One stored message in a listing.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MessageSummary {
    /// The database id (`db:<id>` elsewhere); listings page by it.
    pub id: i64,
    pub mailbox: String,
    pub folder: String,
    pub server_id: String,
    pub message_id: String,
    pub from: Option<String>,
    pub subject: Option<String>,
    /// The Date header, in milliseconds since 1970 (None when missing or unparsable).
    pub date_ms: Option<i64>,
    pub size: u64,
    pub stored_at_ms: i64,
}

/// An attachment as recorded (its content is in the raw message).
#[derive(Debug, Clone, serde::Serialize)]
pub struct StoredAttachment {
    pub name: Option<String>,
    pub media_type: String,
    pub size: u64,
    pub content_id: Option<String>,
}

/// One stored message with its parsed fields.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MessageDetail {
    #[serde(flatten)]
    pub summary: MessageSummary,
    pub classification: String,
    /// Why the message could not be parsed (it is stored raw).
    pub parse_error: Option<String>,
    pub message_id_synthetic: bool,
    pub message_id_collision: bool,
    pub text_body: Option<String>,
    pub html_body: Option<String>,
    pub attachments: Vec<StoredAttachment>,
}

const SUMMARY: &str = "id, mailbox, folder, server_id, message_id, from_addr, subject, date_ms, size, stored_at_ms";

fn summary(r: &rusqlite::Row<'_>) -> rusqlite::Result<MessageSummary> {
    Ok(MessageSummary {
        id: r.get(0)?,
        mailbox: r.get(1)?,
        folder: r.get(2)?,
        server_id: r.get(3)?,
        message_id: r.get(4)?,
        from: r.get(5)?,
        subject: r.get(6)?,
        date_ms: r.get(7)?,
        size: r.get::<_, i64>(8)? as u64,
        stored_at_ms: r.get(9)?,
    })
}

impl Database {
    /// A tenant's stored messages with an id above `after`, oldest first, at most `limit`.
    pub fn list_messages(&self, tenant: &str, after: i64, limit: u32) -> Result<Vec<MessageSummary>, HostError> {
        let mut st = self
            .conn
            .prepare_cached(&format!("SELECT {SUMMARY} FROM messages WHERE tenant = ?1 AND id > ?2 ORDER BY id LIMIT ?3"))
            .map_err(db_err("listing messages"))?;
        let rows = st.query_map(params![tenant, after, limit], summary).map_err(db_err("listing messages"))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(db_err("listing messages"))
    }

    /// How many messages a tenant has stored.
    pub fn count_messages(&self, tenant: &str) -> Result<u64, HostError> {
        self.conn
            .query_row("SELECT COUNT(*) FROM messages WHERE tenant = ?1", params![tenant], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(db_err("counting messages"))
    }

    /// One of the tenant's messages by database id, with its parsed fields (None: no such
    /// message for this tenant).
    pub fn message_detail(&self, tenant: &str, id: i64) -> Result<Option<MessageDetail>, HostError> {
        let found = self
            .conn
            .query_row(
                &format!(
                    "SELECT {SUMMARY}, classification, parse_error, message_id_synthetic, mid_collision, text_body, html_body,
                        raw_segment, raw_offset, size, text_len, html_len, body_check
                     FROM messages WHERE tenant = ?1 AND id = ?2"
                ),
                params![tenant, id],
                |r| {
                    let detail = MessageDetail {
                        summary: summary(r)?,
                        classification: r.get(10)?,
                        parse_error: r.get(11)?,
                        message_id_synthetic: r.get(12)?,
                        message_id_collision: r.get(13)?,
                        text_body: r.get(14)?,
                        html_body: r.get(15)?,
                        attachments: Vec::new(),
                    };
                    Ok((detail, super::BodiesAt::from_row(r, 16)?))
                },
            )
            .optional()
            .map_err(db_err("reading a message"))?;
        let Some((mut detail, bodies)) = found else { return Ok(None) };
        // Since version 4 the bodies follow the raw bytes in the segment.
        if let Some(at) = bodies {
            (detail.text_body, detail.html_body) = super::segments::read_bodies(&self.path, id, &at)?;
        }
        let mut st = self
            .conn
            .prepare_cached("SELECT name, media_type, size, content_id FROM attachments WHERE message = ?1 ORDER BY rowid")
            .map_err(db_err("reading attachments"))?;
        let rows = st
            .query_map(params![id], |r| {
                Ok(StoredAttachment { name: r.get(0)?, media_type: r.get(1)?, size: r.get::<_, i64>(2)? as u64, content_id: r.get(3)? })
            })
            .map_err(db_err("reading attachments"))?;
        detail.attachments = rows.collect::<Result<Vec<_>, _>>().map_err(db_err("reading attachments"))?;
        Ok(Some(detail))
    }

    /// One of the tenant's messages by database id, exactly as fetched.
    /// The bytes live in the row or, for messages stored since schema version 3, in a segment
    /// file beside the database, checked against the row's CRC-32 (or SHA-256) when read.
    pub fn message_raw(&self, tenant: &str, id: i64) -> Result<Option<Vec<u8>>, HostError> {
        self.raw_of(Some(tenant), id)
    }
}
