//! The `outbox` table (see `store::outbox`) in PostgreSQL: each state change locks its row, writes
//! the change and its event in one transaction. In a fenced view (`PgStore::fenced`, a queue's
//! lease) the sender's transitions (`record_commit_point`, `record_outcome`, `recover`) are
//! refused with `LeaseLost` once the lease is lost, and only touch rows of the fenced queue, so
//! a paused sender that wakes after another node took its queue can neither mark a message
//! in flight nor record an outcome. Admin calls (hold, resend, cancel, mark delivered) and
//! `enqueue` are not fenced: any node serving the API may make them.


use super::lease::{queue_resource, Fence};
use super::{pg_err, pg_opt_text, pg_text, PgStore};
use crate::error::HostError;
use crate::store::events::OUTBOX_STATE_CHANGED;
use crate::store::outbox::{Explanation, NewOutbound, Outbox, OutboxRow, OutboxState, RecordedOutcome, RefusedTransition, StateCount};

const COLUMNS: &str = "id, tenant, queue, message_id, envelope, size, state, attempts, next_attempt_at_ms, created_at_ms, updated_at_ms, \
                       last_reply, explanation_en, explanation_de, max_age_ms, save_copy, sent_copy";

fn row(r: &tokio_postgres::Row, with_raw: bool) -> Result<OutboxRow, HostError> {
    let envelope: String = r.get(4);
    let state: String = r.get(6);
    let (en, de): (Option<String>, Option<String>) = (r.get(12), r.get(13));
    let sent_copy: Option<String> = r.get(16);
    Ok(OutboxRow {
        id: r.get(0),
        tenant: r.get(1),
        queue: r.get(2),
        message_id: r.get(3),
        envelope: serde_json::from_str(&envelope).map_err(|e| HostError::Storage(format!("outbox envelope: {e}")))?,
        raw: if with_raw { r.get(17) } else { Vec::new() },
        size: r.get::<_, i64>(5) as u64,
        state: OutboxState::parse(&state).ok_or_else(|| HostError::Storage(format!("unknown outbox state \"{state}\"")))?,
        attempts: r.get::<_, i32>(7) as u32,
        next_attempt_at_ms: r.get(8),
        created_at_ms: r.get(9),
        updated_at_ms: r.get(10),
        last_reply: r.get(11),
        explanation: match (en, de) {
            (Some(en), Some(de)) => Some(Explanation { en, de }),
            (Some(en), None) => Some(Explanation { de: en.clone(), en }),
            _ => None,
        },
        max_age_ms: r.get::<_, i64>(14) as u64,
        save_copy: r.get(15),
        sent_copy: sent_copy.and_then(|s| serde_json::from_str(&s).ok()),
    })
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
    found.map(|r| row(&r, with_raw)).transpose()
}

/// What a transition sets besides the state.
#[derive(Default, Clone)]
struct Change {
    count_attempt: bool,
    next_attempt_at_ms: Option<i64>,
    last_reply: Option<Option<String>>,
    explanation: Option<Option<Explanation>>,
}

/// Moves row `id` (of `tenant`, when given) from one of `from` to `to` with its event, in one
/// transaction; with a `fence`, only a row of the fenced queue and only while the lease holds.
async fn transition(
    db: &super::Db,
    fence: Option<&Fence>,
    tenant: Option<&str>,
    id: &str,
    from: &[OutboxState],
    to: OutboxState,
    change: Change,
    now_ms: i64,
) -> Result<OutboxRow, HostError> {
    let mut c = db.client().await?;
    let tx = c.transaction().await.map_err(pg_err("changing an outbox row"))?;
    if let Some(f) = fence {
        f.check(&tx).await?;
    }
    let Some(before) = get_in(&tx, tenant, id, false, true).await? else {
        return Err(HostError::NotFound(match tenant {
            Some(t) => format!("tenant \"{t}\" has no outbox message \"{id}\""),
            None => format!("no outbox message \"{id}\""),
        }));
    };
    if let Some(f) = fence {
        if f.resource != queue_resource(&before.tenant, &before.queue) {
            return Err(HostError::NotFound(format!(
                "outbox message \"{id}\" is in queue \"{}\" of tenant \"{}\", not in the queue of the lease {}",
                before.queue, before.tenant, f.resource
            )));
        }
    }
    if !from.contains(&before.state) {
        return Err(HostError::Refused(RefusedTransition {
            id: before.id,
            message_id: before.message_id,
            state: before.state,
            allowed: from.to_vec(),
            to,
        }));
    }
    let (reply_set, reply) = match change.last_reply {
        Some(r) => (true, r.map(|r| pg_text(&r).into_owned())),
        None => (false, None),
    };
    let (expl_set, expl) = match change.explanation {
        Some(e) => (true, e),
        None => (false, None),
    };
    let token = fence.map(|f| f.token);
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
            &to.as_str(),
            &now_ms,
            &i32::from(change.count_attempt),
            &change.next_attempt_at_ms,
            &reply_set,
            &reply,
            &expl_set,
            &expl.as_ref().map(|e| pg_text(&e.en).into_owned()),
            &expl.as_ref().map(|e| pg_text(&e.de).into_owned()),
            &token,
        ],
    )
    .await
    .map_err(pg_err("changing an outbox row"))?;
    let after = get_in(&tx, None, id, false, false).await?.ok_or_else(|| HostError::Storage(format!("outbox row {id} vanished")))?;
    super::events::append(&tx, &after.tenant, &[(OUTBOX_STATE_CHANGED, after.state_event(Some(before.state)))], now_ms).await?;
    tx.commit().await.map_err(pg_err("changing an outbox row"))?;
    Ok(after)
}

impl PgStore {
    #[allow(clippy::too_many_arguments)]
    fn transition(
        &self,
        fenced: bool,
        tenant: Option<&str>,
        id: &str,
        from: &[OutboxState],
        to: OutboxState,
        change: Change,
        now_ms: i64,
    ) -> Result<OutboxRow, HostError> {
        let fence = if fenced { self.fence.clone() } else { None };
        let (tenant, id, from) = (tenant.map(str::to_string), id.to_string(), from.to_vec());
        self.wait(|db| async move { transition(&db, fence.as_ref(), tenant.as_deref(), &id, &from, to, change, now_ms).await })
    }
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
            rows.iter().map(|r| row(r, true)).collect()
        })
    }

    fn record_commit_point(&self, id: &str, now_ms: i64) -> Result<(), HostError> {
        self.transition(true, None, id, &[OutboxState::Queued], OutboxState::InFlight, Change::default(), now_ms).map(|_| ())
    }

    fn record_outcome(&self, id: &str, o: &RecordedOutcome, now_ms: i64) -> Result<(), HostError> {
        let next = (o.state == OutboxState::Queued).then_some(o.next_attempt_at_ms);
        let change = Change {
            count_attempt: true,
            next_attempt_at_ms: next,
            last_reply: Some(o.last_reply.clone()),
            explanation: Some(o.explanation.clone()),
        };
        self.transition(true, None, id, &[OutboxState::Queued, OutboxState::InFlight], o.state, change, now_ms).map(|_| ())
    }

    fn recover(&self, tenant: &str, queue: &str, why: &Explanation, now_ms: i64) -> Result<Vec<String>, HostError> {
        let (t, q) = (tenant.to_string(), queue.to_string());
        let ids: Vec<String> = self.wait(|db| async move {
            let c = db.client().await?;
            let rows = c
                .query("SELECT id FROM outbox WHERE tenant = $1 AND queue = $2 AND state = 'in-flight' ORDER BY seq", &[&t, &q])
                .await
                .map_err(pg_err("reading the outbox"))?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })?;
        for id in &ids {
            let change = Change { explanation: Some(Some(why.clone())), ..Change::default() };
            self.transition(true, Some(tenant), id, &[OutboxState::InFlight], OutboxState::Held, change, now_ms)?;
        }
        Ok(ids)
    }

    fn hold(&self, tenant: &str, id: &str, now_ms: i64) -> Result<OutboxRow, HostError> {
        let why = Explanation {
            en: "held by an admin: not sent until it is resent".into(),
            de: "von einem Administrator angehalten: wird erst nach \"erneut senden\" verschickt".into(),
        };
        let change = Change { explanation: Some(Some(why)), ..Change::default() };
        self.transition(false, Some(tenant), id, &[OutboxState::Queued], OutboxState::Held, change, now_ms)
    }

    fn resend(&self, tenant: &str, id: &str, now_ms: i64) -> Result<OutboxRow, HostError> {
        let change = Change { next_attempt_at_ms: Some(now_ms), explanation: Some(None), ..Change::default() };
        self.transition(false, Some(tenant), id, &[OutboxState::Held, OutboxState::Failed], OutboxState::Queued, change, now_ms)
    }

    fn mark_delivered(&self, tenant: &str, id: &str, now_ms: i64) -> Result<OutboxRow, HostError> {
        let change = Change { explanation: Some(None), ..Change::default() };
        self.transition(false, Some(tenant), id, &[OutboxState::Held], OutboxState::Delivered, change, now_ms)
    }

    fn cancel(&self, tenant: &str, id: &str, now_ms: i64) -> Result<OutboxRow, HostError> {
        let from = [OutboxState::Queued, OutboxState::Held, OutboxState::Failed];
        self.transition(false, Some(tenant), id, &from, OutboxState::Cancelled, Change::default(), now_ms)
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
            rows.iter().map(|r| row(r, false)).collect()
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
