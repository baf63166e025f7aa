//! The `events` table (see `store::events`) in PostgreSQL: appended in the transaction of what
//! an event describes, identified by a ULID, numbered in commit order within a tenant.
//!
//! Several nodes commit at once, so a number taken from a sequence when a row is inserted is
//! not commit order: a reader could see number 11 committed before 10 and, continuing after
//! 11, never see 10. So `append` first takes the tenant's transaction-level advisory lock and
//! only then numbers the events; the lock is released after the commit is visible, so within a
//! tenant numbers are handed out in commit order. Writers append their events last, just before
//! committing, to hold the lock briefly.

use super::{pg_err, PgStore};
use crate::error::HostError;
use crate::store::events::{Event, Events};

/// Appends events on `tx`, which must be inside the transaction that writes what they describe,
/// as its last statements before the commit. Returns their ids.
pub(crate) async fn append(
    tx: &deadpool_postgres::Transaction<'_>,
    tenant: &str,
    events: &[(&str, serde_json::Value)],
    now_ms: i64,
) -> Result<Vec<String>, HostError> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    tx.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", &[&format!("mailplug events {tenant}")])
        .await
        .map_err(pg_err("recording an event"))?;
    let st = tx
        .prepare_cached(
            "INSERT INTO events (seq, id, tenant, kind, payload, created_at_ms) VALUES (nextval('events_seq'), $1, $2, $3, $4, $5)",
        )
        .await
        .map_err(pg_err("recording an event"))?;
    let mut ids = Vec::with_capacity(events.len());
    for (kind, payload) in events {
        let id = ulid::Ulid::new().to_string();
        let text = super::pg_text(&payload.to_string()).into_owned();
        tx.execute(&st, &[&id, &tenant, kind, &text, &now_ms]).await.map_err(pg_err("recording an event"))?;
        ids.push(id);
    }
    Ok(ids)
}

const COLUMNS: &str = "id, tenant, kind, payload, created_at_ms, delivered_at_ms, attempts, next_attempt_at_ms, dead";

fn event(r: &tokio_postgres::Row) -> Event {
    let payload: String = r.get(3);
    Event {
        id: r.get(0),
        tenant: r.get(1),
        kind: r.get(2),
        payload: serde_json::from_str(&payload).unwrap_or(serde_json::Value::String(payload)),
        created_at_ms: r.get(4),
        delivered_at_ms: r.get(5),
        attempts: r.get::<_, i32>(6) as u32,
        next_attempt_at_ms: r.get(7),
        dead: r.get(8),
    }
}

fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl PgStore {
    /// Updates one event's delivery columns. In a fenced view (the `webhook:<tenant>` lease)
    /// the update first checks the lease in its transaction (refused with `LeaseLost` once
    /// another node took the tenant's webhook over) and only touches that tenant's events.
    fn update_event(&self, id: &str, sql_set: &'static str, arg: Option<i64>) -> Result<(), HostError> {
        let id = id.to_string();
        let fence = self.fence.clone();
        self.wait(|db| async move {
            let mut c = db.client().await?;
            let tx = c.transaction().await.map_err(pg_err("updating an event"))?;
            let tenant = match &fence {
                Some(f) => {
                    let tenant = f.resource.strip_prefix("webhook:").ok_or_else(|| {
                        HostError::Storage(format!("events are marked under a tenant's webhook lease, not under {}", f.resource))
                    })?;
                    f.check(&tx).await?;
                    Some(tenant.to_string())
                }
                None => None,
            };
            let n = match arg {
                Some(v) => {
                    tx.execute(&format!("UPDATE events SET {sql_set} WHERE id = $1 AND ($3::text IS NULL OR tenant = $3)"), &[&id, &v, &tenant])
                        .await
                }
                None => tx.execute(&format!("UPDATE events SET {sql_set} WHERE id = $1 AND ($2::text IS NULL OR tenant = $2)"), &[&id, &tenant]).await,
            }
            .map_err(pg_err("updating an event"))?;
            if n == 0 {
                return Err(HostError::NotFound(match tenant {
                    Some(t) => format!("tenant \"{t}\" has no event \"{id}\""),
                    None => format!("no event \"{id}\""),
                }));
            }
            tx.commit().await.map_err(pg_err("updating an event"))
        })
    }
}

impl Events for PgStore {
    fn next_undelivered(&self, tenant: &str, n: usize) -> Result<Vec<Event>, HostError> {
        let tenant = tenant.to_string();
        self.wait(|db| async move {
            let c = db.client().await?;
            let rows = c
                .query(
                    &format!("SELECT {COLUMNS} FROM events WHERE tenant = $1 AND delivered_at_ms IS NULL AND NOT dead ORDER BY seq LIMIT $2"),
                    &[&tenant, &limit(n)],
                )
                .await
                .map_err(pg_err("reading events"))?;
            Ok(rows.iter().map(event).collect())
        })
    }

    fn mark_delivered(&self, id: &str, now_ms: i64) -> Result<(), HostError> {
        self.update_event(id, "delivered_at_ms = $2, next_attempt_at_ms = NULL", Some(now_ms))
    }

    fn mark_failed(&self, id: &str, next_attempt_at_ms: i64) -> Result<(), HostError> {
        self.update_event(id, "attempts = attempts + 1, next_attempt_at_ms = $2", Some(next_attempt_at_ms))
    }

    fn mark_dead(&self, id: &str) -> Result<(), HostError> {
        self.update_event(id, "dead = true, next_attempt_at_ms = NULL", None)
    }

    fn list_after(&self, tenant: &str, after_id: Option<&str>, n: usize) -> Result<Vec<Event>, HostError> {
        let (tenant, after_id) = (tenant.to_string(), after_id.map(str::to_string));
        self.wait(|db| async move {
            let c = db.client().await?;
            let after: i64 = match &after_id {
                None => 0,
                Some(id) => c
                    .query_opt("SELECT seq FROM events WHERE tenant = $1 AND id = $2", &[&tenant, id])
                    .await
                    .map_err(pg_err("reading events"))?
                    .map(|r| r.get(0))
                    .ok_or_else(|| HostError::NotFound(format!("tenant \"{tenant}\" has no event \"{id}\" to continue after")))?,
            };
            let rows = c
                .query(&format!("SELECT {COLUMNS} FROM events WHERE tenant = $1 AND seq > $2 ORDER BY seq LIMIT $3"), &[&tenant, &after, &limit(n)])
                .await
                .map_err(pg_err("reading events"))?;
            Ok(rows.iter().map(event).collect())
        })
    }
}
