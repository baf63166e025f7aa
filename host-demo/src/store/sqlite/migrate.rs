//! Bringing databases written by earlier versions to the current layout.

use rusqlite::{params, Connection};

use super::{db_err, SCHEMA};
use crate::error::HostError;

/// The schema version this code writes (`PRAGMA user_version`). Version 1 (0 in the file)
/// had `UNIQUE (tenant, mailbox, message_id)`, no `source`, `content_hash`, `mid_collision`,
/// `reported` and no sync-state `binding`; version 2 kept every message's bytes in `raw`
/// (no `raw_segment`, `raw_offset`: see `segments`); version 3 kept the bodies in the row
/// (no `text_len`, `html_len`, `body_check`) and computed every row's SHA-256 (no `raw_check`).
pub(super) const SCHEMA_VERSION: i64 = 4;

/// Brings a database of an earlier version to the current layout, keeping every row: the
/// messages table is rebuilt without the Message-ID constraint (SQLite cannot drop one), its
/// rows counted as reported (the earlier version printed them) with their content hashes
/// computed; the sync states get an empty binding, adopted by the next run. Rows of versions
/// 1 and 2 keep their bytes in `raw` (their `raw_segment` is NULL), rows of versions 1 to 3
/// their bodies in `text_body` and `html_body` (their `body_check` is NULL); new rows use
/// segments for both.
pub(super) fn migrate(conn: &mut Connection) -> Result<(), HostError> {
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
    for column in ["raw_segment", "raw_offset", "text_len", "html_len", "body_check", "raw_check"] {
        if !has_column(&tx, "messages", column)? {
            tx.execute_batch(&format!("ALTER TABLE messages ADD COLUMN {column} INTEGER")).map_err(db_err("migrating the messages table"))?;
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
