//! The `events` table (see `store::events`): appended inside the transaction of what an event
//! describes, numbered by `seq` in commit order (SQLite has one writer at a time, and
//! AUTOINCREMENT never reuses a number), identified by a ULID.

use rusqlite::{params, Connection, OptionalExtension};

use super::{db_err, Database};
use crate::error::HostError;
use crate::store::events::{Event, Events};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    seq                 INTEGER PRIMARY KEY AUTOINCREMENT,
    id                  TEXT NOT NULL UNIQUE,
    tenant              TEXT NOT NULL,
    kind                TEXT NOT NULL,
    payload             TEXT NOT NULL,
    created_at_ms       INTEGER NOT NULL,
    delivered_at_ms     INTEGER,
    attempts            INTEGER NOT NULL DEFAULT 0,
    next_attempt_at_ms  INTEGER,
    dead                INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS events_by_tenant ON events (tenant, seq);
CREATE INDEX IF NOT EXISTS events_undelivered ON events (tenant, seq) WHERE delivered_at_ms IS NULL AND dead = 0;
";

/// Appends an event on `conn`, which must be inside the transaction that writes what the
/// event describes. Returns its id.
pub(crate) fn append(conn: &Connection, tenant: &str, kind: &str, payload: &serde_json::Value, now_ms: i64) -> Result<String, HostError> {
    let id = ulid::Ulid::new().to_string();
    conn.prepare_cached("INSERT INTO events (id, tenant, kind, payload, created_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)")
        .and_then(|mut st| st.execute(params![id, tenant, kind, payload.to_string(), now_ms]))
        .map_err(db_err("recording an event"))?;
    Ok(id)
}

const COLUMNS: &str = "id, tenant, kind, payload, created_at_ms, delivered_at_ms, attempts, next_attempt_at_ms, dead";

fn event(r: &rusqlite::Row<'_>) -> rusqlite::Result<Event> {
    let payload: String = r.get(3)?;
    Ok(Event {
        id: r.get(0)?,
        tenant: r.get(1)?,
        kind: r.get(2)?,
        payload: serde_json::from_str(&payload).unwrap_or(serde_json::Value::String(payload)),
        created_at_ms: r.get(4)?,
        delivered_at_ms: r.get(5)?,
        attempts: r.get(6)?,
        next_attempt_at_ms: r.get(7)?,
        dead: r.get(8)?,
    })
}

fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Database {
    fn events_where(&self, sql_where: &str, args: &[&dyn rusqlite::ToSql]) -> Result<Vec<Event>, HostError> {
        let mut st = self
            .conn
            .prepare_cached(&format!("SELECT {COLUMNS} FROM events WHERE {sql_where}"))
            .map_err(db_err("reading events"))?;
        let rows = st.query_map(args, event).map_err(db_err("reading events"))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(db_err("reading events"))
    }

    fn update_event(&self, id: &str, sql_set: &str, args: &[&dyn rusqlite::ToSql]) -> Result<(), HostError> {
        let mut all: Vec<&dyn rusqlite::ToSql> = vec![&id];
        all.extend_from_slice(args);
        let n = self.writing(|| {
            self.conn.execute(&format!("UPDATE events SET {sql_set} WHERE id = ?1"), all.as_slice()).map_err(db_err("updating an event"))
        })?;
        if n == 0 {
            return Err(HostError::NotFound(format!("no event \"{id}\"")));
        }
        Ok(())
    }
}

impl Events for Database {
    fn next_undelivered(&self, tenant: &str, n: usize) -> Result<Vec<Event>, HostError> {
        self.events_where("tenant = ?1 AND delivered_at_ms IS NULL AND dead = 0 ORDER BY seq LIMIT ?2", &[&tenant, &limit(n)])
    }

    fn mark_delivered(&self, id: &str, now_ms: i64) -> Result<(), HostError> {
        self.update_event(id, "delivered_at_ms = ?2, next_attempt_at_ms = NULL", &[&now_ms])
    }

    fn mark_failed(&self, id: &str, next_attempt_at_ms: i64) -> Result<(), HostError> {
        self.update_event(id, "attempts = attempts + 1, next_attempt_at_ms = ?2", &[&next_attempt_at_ms])
    }

    fn mark_dead(&self, id: &str) -> Result<(), HostError> {
        self.update_event(id, "dead = 1, next_attempt_at_ms = NULL", &[])
    }

    fn list_after(&self, tenant: &str, after_id: Option<&str>, n: usize) -> Result<Vec<Event>, HostError> {
        let after: i64 = match after_id {
            None => 0,
            Some(id) => self
                .conn
                .query_row("SELECT seq FROM events WHERE tenant = ?1 AND id = ?2", params![tenant, id], |r| r.get(0))
                .optional()
                .map_err(db_err("reading events"))?
                .ok_or_else(|| HostError::NotFound(format!("tenant \"{tenant}\" has no event \"{id}\" to continue after")))?,
        };
        self.events_where("tenant = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3", &[&tenant, &after, &limit(n)])
    }
}
