//! The `outbox` table (see `store::outbox`) in PostgreSQL: each state change locks its row, writes
//! the change and its event in one transaction. In a fenced view (`PgStore::fenced`, a queue's
//! lease) the sender's transitions (`record_commit_point`, `record_outcome`, `recover`) are
//! refused with `LeaseLost` once the lease is lost, and only touch rows of the fenced queue, so
//! a paused sender that wakes after another node took its queue can neither mark a message
//! in flight nor record an outcome. Admin calls (hold, resend, cancel, mark delivered) and
//! `enqueue` are not fenced: any node serving the API may make them. The transitions themselves
//! (which state may go where, what an outcome sets) are `store::outbox::Transition`.

use super::lease::{queue_resource, Fence};
use super::{pg_err, pg_opt_text, pg_text, PgStore};
use crate::error::HostError;
use crate::store::events::OUTBOX_STATE_CHANGED;
use crate::store::outbox::{
    not_found, read_row, Explanation, NewOutbound, Outbox, OutboxColumns, OutboxRow, OutboxState, StateCount, Transition, COLUMNS,
};

/// Reads a column, a value of the wrong type becoming a storage error instead of a panic.
fn column<'a, T: tokio_postgres::types::FromSql<'a>>(r: &'a tokio_postgres::Row, i: usize) -> Result<T, HostError> {
    r.try_get(i).map_err(|e| HostError::Storage(format!("PostgreSQL, reading the outbox: column {i}: {e}")))
}

impl OutboxColumns for tokio_postgres::Row {
    type Error = HostError;
    fn text(&self, i: usize) -> Result<Option<String>, HostError> {
        column(self, i)
    }
    /// `attempts` is an `integer`, the times and sizes `bigint`.
    fn int(&self, i: usize) -> Result<i64, HostError> {
        column::<i64>(self, i).or_else(|_| column::<i32>(self, i).map(i64::from))
    }
    fn bytes(&self, i: usize) -> Result<Vec<u8>, HostError> {
        column(self, i)
    }
    fn unusable(&self, _: usize, what: String) -> HostError {
        HostError::Storage(what)
    }
}

async fn get_in(
    c: &impl deadpool_postgres::GenericClient,
    tenant: Option<&str>,
    id: &str,
    with_raw: bool,
    lock: bool,
) -> Result<Option<OutboxRow>, HostError> {
    let raw = if with_raw { ", raw" } else { "" };
    let lock = if lock { " FOR UPDATE" } else { "" };
    let found = c
        .query_opt(&format!("SELECT {COLUMNS}{raw} FROM outbox WHERE id = $1 AND ($2::text IS NULL OR tenant = $2){lock}"), &[&id, &tenant])
        .await
        .map_err(pg_err("reading the outbox"))?;
    found.map(|r| read_row(&r, with_raw)).transpose()
}

/// Applies `t` to row `id` (of `tenant`, when given) with its event, in one transaction that
/// locks the row; with a `fence` (the sender's transitions in a fenced view), only a row of the
/// fenced queue and only while the lease holds.
async fn apply(db: &super::Db, fence: Option<&Fence>, tenant: Option<&str>, id: &str, t: &Transition, now_ms: i64) -> Result<OutboxRow, HostError> {
    let mut c = db.client().await?;
    let tx = c.transaction().await.map_err(pg_err("changing an outbox row"))?;
    if let Some(f) = fence {
        f.check(&tx).await?;
    }
    let before = get_in(&tx, tenant, id, false, true).await?.ok_or_else(|| not_found(tenant, id))?;
    if let Some(f) = fence {
        if f.resource != queue_resource(&before.tenant, &before.queue) {
            return Err(HostError::NotFound(format!(
                "outbox message \"{id}\" is in queue \"{}\" of tenant \"{}\", not in the queue of the lease {}",
                before.queue, before.tenant, f.resource
            )));
        }
    }
    t.check(&before)?;
    let (reply_set, reply) = t.change.reply_update();
    let (explanation_set, en, de) = t.change.explanation_update();
    let [reply, en, de] = [reply, en, de].map(|s| s.map(|s| pg_text(s).into_owned()));
    tx.execute(
        "UPDATE outbox SET state = $2, updated_at_ms = $3, attempts = attempts + $4,
            next_attempt_at_ms = COALESCE($5, next_attempt_at_ms),
            last_reply = CASE WHEN $6 THEN $7 ELSE last_reply END,
            explanation_en = CASE WHEN $8 THEN $9 ELSE explanation_en END,
            explanation_de = CASE WHEN $8 THEN $10 ELSE explanation_de END,
            token = COALESCE($11, token)
         WHERE id = $1",
        &[
            &id,
            &t.to.as_str(),
            &now_ms,
            &i32::from(t.change.count_attempt),
            &t.change.next_attempt_at_ms,
            &reply_set,
            &reply,
            &explanation_set,
            &en,
            &de,
            &fence.map(|f| f.token),
        ],
    )
    .await
    .map_err(pg_err("changing an outbox row"))?;
    let after = get_in(&tx, None, id, false, false).await?.ok_or_else(|| HostError::Storage(format!("outbox row {id} vanished")))?;
    super::events::append(&tx, &after.tenant, &[(OUTBOX_STATE_CHANGED, after.state_event(Some(before.state)))], now_ms).await?;
    tx.commit().await.map_err(pg_err("changing an outbox row"))?;
    Ok(after)
}

impl Outbox for PgStore {
    fn enqueue(&self, m: &NewOutbound, now_ms: i64) -> Result<OutboxRow, HostError> {
        let id = ulid::Ulid::new().to_string();
        let envelope = serde_json::to_string(&m.envelope).map_err(|e| HostError::Storage(format!("outbox envelope: {e}")))?;
        let m = m.clone();
        self.wait(|db| async move {
            let mut c = db.client().await?;
            let tx = c.transaction().await.map_err(pg_err("enqueueing a message"))?;
            tx.execute(
                "INSERT INTO outbox (id, tenant, queue, message_id, envelope, raw, size, state, next_attempt_at_ms, created_at_ms,
                    updated_at_ms, max_age_ms, save_copy)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 'queued', $8, $8, $8, $9, $10)",
                &[
                    &id,
                    &m.tenant,
                    &m.queue,
                    &pg_text(&m.message_id),
                    &envelope,
                    &m.raw,
                    &(m.raw.len() as i64),
                    &now_ms,
                    &i64::try_from(m.max_age_ms).unwrap_or(i64::MAX),
                    &pg_opt_text(&m.save_copy),
                ],
            )
            .await
            .map_err(pg_err("enqueueing a message"))?;
            let r = get_in(&tx, None, &id, false, false).await?.ok_or_else(|| HostError::Storage("the enqueued row vanished".into()))?;
            super::events::append(&tx, &r.tenant, &[(OUTBOX_STATE_CHANGED, r.state_event(None))], now_ms).await?;
            tx.commit().await.map_err(pg_err("enqueueing a message"))?;
            Ok(r)
        })
    }

    fn take_due(&self, tenant: &str, queue: &str, limit: usize, now_ms: i64) -> Result<Vec<OutboxRow>, HostError> {
        let (tenant, queue) = (tenant.to_string(), queue.to_string());
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.wait(|db| async move {
            let c = db.client().await?;
            let rows = c
                .query(
                    &format!(
                        "SELECT {COLUMNS}, raw FROM outbox WHERE tenant = $1 AND queue = $2 AND state = 'queued' AND next_attempt_at_ms <= $3
                         ORDER BY seq LIMIT $4"
                    ),
                    &[&tenant, &queue, &now_ms, &limit],
                )
                .await
                .map_err(pg_err("reading the outbox"))?;
            rows.iter().map(|r| read_row(r, true)).collect()
        })
    }

    fn apply(&self, tenant: Option<&str>, id: &str, t: Transition, now_ms: i64) -> Result<OutboxRow, HostError> {
        let fence = if t.by_sender { self.fence.clone() } else { None };
        let (tenant, id) = (tenant.map(str::to_string), id.to_string());
        self.wait(|db| async move { apply(&db, fence.as_ref(), tenant.as_deref(), &id, &t, now_ms).await })
    }

    fn ids_in(&self, tenant: &str, queue: &str, state: OutboxState) -> Result<Vec<String>, HostError> {
        let (tenant, queue, state) = (tenant.to_string(), queue.to_string(), state.as_str());
        self.wait(|db| async move {
            let c = db.client().await?;
            let rows = c
                .query("SELECT id FROM outbox WHERE tenant = $1 AND queue = $2 AND state = $3 ORDER BY seq", &[&tenant, &queue, &state])
                .await
                .map_err(pg_err("reading the outbox"))?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })
    }

    fn list(&self, tenant: &str, queue: Option<&str>, state: Option<OutboxState>, limit: usize) -> Result<Vec<OutboxRow>, HostError> {
        let (tenant, queue, state) = (tenant.to_string(), queue.map(str::to_string), state.map(|s| s.as_str().to_string()));
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.wait(|db| async move {
            let c = db.client().await?;
            let rows = c
                .query(
                    &format!(
                        "SELECT {COLUMNS} FROM outbox WHERE tenant = $1 AND ($2::text IS NULL OR queue = $2) AND ($3::text IS NULL OR state = $3)
                         ORDER BY seq LIMIT $4"
                    ),
                    &[&tenant, &queue, &state, &limit],
                )
                .await
                .map_err(pg_err("reading the outbox"))?;
            rows.iter().map(|r| read_row(r, false)).collect()
        })
    }

    fn count(&self, tenant: &str, queue: &str, state: OutboxState) -> Result<StateCount, HostError> {
        let (tenant, queue, state) = (tenant.to_string(), queue.to_string(), state.as_str().to_string());
        self.wait(|db| async move {
            let c = db.client().await?;
            let r = c
                .query_one(
                    "SELECT COUNT(*), MIN(created_at_ms), MIN(next_attempt_at_ms) FROM outbox WHERE tenant = $1 AND queue = $2 AND state = $3",
                    &[&tenant, &queue, &state],
                )
                .await
                .map_err(pg_err("counting the outbox"))?;
            Ok(StateCount {
                rows: r.get::<_, i64>(0).max(0) as u64,
                oldest_created_at_ms: r.get(1),
                earliest_next_attempt_at_ms: r.get(2),
            })
        })
    }

    fn get(&self, tenant: &str, id: &str, with_raw: bool) -> Result<Option<OutboxRow>, HostError> {
        let (tenant, id) = (tenant.to_string(), id.to_string());
        self.wait(|db| async move {
            let c = db.client().await?;
            get_in(&c, Some(&tenant), &id, with_raw, false).await
        })
    }

    fn record_sent_copy(&self, id: &str, copy: &serde_json::Value, now_ms: i64) -> Result<(), HostError> {
        let (id, copy) = (id.to_string(), pg_text(&copy.to_string()).into_owned());
        self.wait(|db| async move {
            let c = db.client().await?;
            c.execute("UPDATE outbox SET sent_copy = $2, updated_at_ms = $3 WHERE id = $1", &[&id, &copy, &now_ms])
                .await
                .map(|_| ())
                .map_err(pg_err("recording the sent copy"))
        })
    }

    fn record_explanation(&self, id: &str, e: &Explanation) -> Result<(), HostError> {
        let (id, en, de) = (id.to_string(), pg_text(&e.en).into_owned(), pg_text(&e.de).into_owned());
        self.wait(|db| async move {
            let c = db.client().await?;
            c.execute("UPDATE outbox SET explanation_en = $2, explanation_de = $3 WHERE id = $1", &[&id, &en, &de])
                .await
                .map(|_| ())
                .map_err(pg_err("recording an explanation"))
        })
    }
}
