//! The `outbox` table (see `store::outbox`): each state change and its event in one
//! `BEGIN IMMEDIATE` transaction, synced (`synchronous = FULL`) before the call returns (an
//! outcome: by the next synced commit). The rules of each change are `store::outbox::Transition`.

use rusqlite::{params, Connection, OptionalExtension};

use super::{db_err, events, Database};
use crate::error::HostError;
use crate::store::events::OUTBOX_STATE_CHANGED;
use crate::store::outbox::{
    not_found, read_row, Explanation, NewOutbound, Outbox, OutboxColumns, OutboxRow, OutboxState, StateCount, Transition, COLUMNS,
};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS outbox (
    seq                 INTEGER PRIMARY KEY AUTOINCREMENT,
    id                  TEXT NOT NULL UNIQUE,
    tenant              TEXT NOT NULL,
    queue               TEXT NOT NULL,
    message_id          TEXT NOT NULL,
    -- JSON: {\"from\": ..., \"to\": [...]}
    envelope            TEXT NOT NULL,
    -- The composed message, fixed at enqueue: a resend is byte-identical.
    raw                 BLOB NOT NULL,
    size                INTEGER NOT NULL,
    -- queued, in-flight, delivered, failed, held, cancelled
    state               TEXT NOT NULL,
    attempts            INTEGER NOT NULL DEFAULT 0,
    next_attempt_at_ms  INTEGER NOT NULL,
    created_at_ms       INTEGER NOT NULL,
    updated_at_ms       INTEGER NOT NULL,
    last_reply          TEXT,
    explanation_en      TEXT,
    explanation_de      TEXT,
    max_age_ms          INTEGER NOT NULL,
    -- The mailbox whose save_sent folder gets a copy once delivered; what became of it (JSON).
    save_copy           TEXT,
    sent_copy           TEXT
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (tenant, queue, state, next_attempt_at_ms);
";

impl OutboxColumns for rusqlite::Row<'_> {
    type Error = rusqlite::Error;
    fn text(&self, i: usize) -> rusqlite::Result<Option<String>> {
        self.get(i)
    }
    fn int(&self, i: usize) -> rusqlite::Result<i64> {
        self.get(i)
    }
    fn bytes(&self, i: usize) -> rusqlite::Result<Vec<u8>> {
        self.get(i)
    }
    fn unusable(&self, i: usize, what: String) -> rusqlite::Error {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, what.into())
    }
}

/// Runs `f` in a `BEGIN IMMEDIATE` transaction (the write lock from the start, so a concurrent
/// writer waits instead of failing on upgrade), committed when it succeeds.
fn immediate<T>(conn: &Connection, what: &str, f: impl FnOnce(&Connection) -> Result<T, HostError>) -> Result<T, HostError> {
    conn.execute_batch("BEGIN IMMEDIATE").map_err(db_err(what))?;
    let result = f(conn).and_then(|v| conn.execute_batch("COMMIT").map(|_| v).map_err(db_err(what)));
    if result.is_err() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    result
}

fn get_in(conn: &Connection, tenant: Option<&str>, id: &str, with_raw: bool) -> Result<Option<OutboxRow>, HostError> {
    let raw = if with_raw { ", raw" } else { "" };
    conn.prepare_cached(&format!("SELECT {COLUMNS}{raw} FROM outbox WHERE id = ?1 AND (?2 IS NULL OR tenant = ?2)"))
        .and_then(|mut st| st.query_row(params![id, tenant], |r| read_row(r, with_raw)).optional())
        .map_err(db_err("reading the outbox"))
}

/// The event describing a row in its new state.
fn state_event(conn: &Connection, r: &OutboxRow, previous: Option<OutboxState>, now_ms: i64) -> Result<(), HostError> {
    let payload = r.state_event(previous);
    events::append(conn, &r.tenant, OUTBOX_STATE_CHANGED, &payload, now_ms).map(|_| ())
}

/// Writes `t` to row `id` (checked already) and its event; returns the row as changed.
fn write_transition(c: &Connection, before: &OutboxRow, t: &Transition, now_ms: i64) -> Result<OutboxRow, HostError> {
    let (reply_set, reply) = t.change.reply_update();
    let (explanation_set, en, de) = t.change.explanation_update();
    c.prepare_cached(
        "UPDATE outbox SET state = ?2, updated_at_ms = ?3, attempts = attempts + ?4,
            next_attempt_at_ms = COALESCE(?5, next_attempt_at_ms),
            last_reply = CASE WHEN ?6 THEN ?7 ELSE last_reply END,
            explanation_en = CASE WHEN ?8 THEN ?9 ELSE explanation_en END,
            explanation_de = CASE WHEN ?8 THEN ?10 ELSE explanation_de END
         WHERE id = ?1",
    )
    .and_then(|mut st| {
        let attempt = i64::from(t.change.count_attempt);
        st.execute(params![before.id, t.to.as_str(), now_ms, attempt, t.change.next_attempt_at_ms, reply_set, reply, explanation_set, en, de])
    })
    .map_err(db_err("changing an outbox row"))?;
    let after = get_in(c, None, &before.id, false)?.ok_or_else(|| HostError::Storage(format!("outbox row {} vanished", before.id)))?;
    state_event(c, &after, Some(before.state), now_ms)?;
    Ok(after)
}

impl Outbox for Database {
    fn enqueue(&self, m: &NewOutbound, now_ms: i64) -> Result<OutboxRow, HostError> {
        let id = ulid::Ulid::new().to_string();
        let envelope = serde_json::to_string(&m.envelope).map_err(|e| HostError::Storage(format!("outbox envelope: {e}")))?;
        self.writing(|| immediate(&self.conn, "enqueueing a message", |c| {
            c.prepare_cached(
                "INSERT INTO outbox (id, tenant, queue, message_id, envelope, raw, size, state, next_attempt_at_ms, created_at_ms,
                    updated_at_ms, max_age_ms, save_copy)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'queued', ?8, ?8, ?8, ?9, ?10)",
            )
            .and_then(|mut st| {
                st.execute(params![
                    id,
                    m.tenant,
                    m.queue,
                    m.message_id,
                    envelope,
                    m.raw,
                    m.raw.len() as i64,
                    now_ms,
                    i64::try_from(m.max_age_ms).unwrap_or(i64::MAX),
                    m.save_copy
                ])
            })
            .map_err(db_err("enqueueing a message"))?;
            let r = get_in(c, None, &id, false)?.ok_or_else(|| HostError::Storage("the enqueued row vanished".into()))?;
            state_event(c, &r, None, now_ms)?;
            Ok(r)
        }))
    }

    fn take_due(&self, tenant: &str, queue: &str, limit: usize, now_ms: i64) -> Result<Vec<OutboxRow>, HostError> {
        let mut st = self
            .conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS}, raw FROM outbox WHERE tenant = ?1 AND queue = ?2 AND state = 'queued' AND next_attempt_at_ms <= ?3
                 ORDER BY seq LIMIT ?4"
            ))
            .map_err(db_err("reading the outbox"))?;
        let rows = st
            .query_map(params![tenant, queue, now_ms, i64::try_from(limit).unwrap_or(i64::MAX)], |r| read_row(r, true))
            .map_err(db_err("reading the outbox"))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(db_err("reading the outbox"))
    }

    fn apply(&self, tenant: Option<&str>, id: &str, t: Transition, now_ms: i64) -> Result<OutboxRow, HostError> {
        let change = || {
            self.writing(|| {
                immediate(&self.conn, "changing an outbox row", |c| {
                    let before = get_in(c, tenant, id, false)?.ok_or_else(|| not_found(tenant, id))?;
                    t.check(&before)?;
                    write_transition(c, &before, &t, now_ms)
                })
            })
        };
        // An unsynced change (an outcome) skips its own fsync (`Database::unsynced`): the WAL
        // keeps commits in order, so a power cut can only lose it together with everything
        // after it, and the next synced commit (the next commit point, an enqueue) makes it
        // durable. A killed process loses nothing: the commit is in the WAL file.
        if t.synced {
            change()
        } else {
            self.unsynced(|_| change())
        }
    }

    fn ids_in(&self, tenant: &str, queue: &str, state: OutboxState) -> Result<Vec<String>, HostError> {
        let mut st = self
            .conn
            .prepare_cached("SELECT id FROM outbox WHERE tenant = ?1 AND queue = ?2 AND state = ?3 ORDER BY seq")
            .map_err(db_err("reading the outbox"))?;
        let rows = st.query_map(params![tenant, queue, state.as_str()], |r| r.get(0)).map_err(db_err("reading the outbox"))?;
        rows.collect::<Result<_, _>>().map_err(db_err("reading the outbox"))
    }

    fn list(&self, tenant: &str, queue: Option<&str>, state: Option<OutboxState>, limit: usize) -> Result<Vec<OutboxRow>, HostError> {
        let mut st = self
            .conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM outbox WHERE tenant = ?1 AND (?2 IS NULL OR queue = ?2) AND (?3 IS NULL OR state = ?3)
                 ORDER BY seq LIMIT ?4"
            ))
            .map_err(db_err("reading the outbox"))?;
        let rows = st
            .query_map(params![tenant, queue, state.map(OutboxState::as_str), i64::try_from(limit).unwrap_or(i64::MAX)], |r| read_row(r, false))
            .map_err(db_err("reading the outbox"))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(db_err("reading the outbox"))
    }

    fn get(&self, tenant: &str, id: &str, with_raw: bool) -> Result<Option<OutboxRow>, HostError> {
        get_in(&self.conn, Some(tenant), id, with_raw)
    }

    fn record_sent_copy(&self, id: &str, copy: &serde_json::Value, now_ms: i64) -> Result<(), HostError> {
        self.writing(|| {
            self.conn
                .execute("UPDATE outbox SET sent_copy = ?2, updated_at_ms = ?3 WHERE id = ?1", params![id, copy.to_string(), now_ms])
                .map(|_| ())
                .map_err(db_err("recording the sent copy"))
        })
    }

    fn count(&self, tenant: &str, queue: &str, state: OutboxState) -> Result<StateCount, HostError> {
        self.conn
            .prepare_cached("SELECT COUNT(*), MIN(created_at_ms), MIN(next_attempt_at_ms) FROM outbox WHERE tenant = ?1 AND queue = ?2 AND state = ?3")
            .and_then(|mut st| {
                st.query_row(params![tenant, queue, state.as_str()], |r| {
                    Ok(StateCount {
                        rows: r.get::<_, i64>(0)?.max(0) as u64,
                        oldest_created_at_ms: r.get(1)?,
                        earliest_next_attempt_at_ms: r.get(2)?,
                    })
                })
            })
            .map_err(db_err("counting the outbox"))
    }

    fn record_explanation(&self, id: &str, e: &Explanation) -> Result<(), HostError> {
        self.writing(|| {
            self.conn
                .execute("UPDATE outbox SET explanation_en = ?2, explanation_de = ?3 WHERE id = ?1", params![id, e.en, e.de])
                .map(|_| ())
                .map_err(db_err("recording an explanation"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::events::{Events, MESSAGE_STORED};
    use crate::store::sqlite::tests::temp_db;
    use crate::store::{Envelope, RecordedOutcome};


    fn new(tenant: &str, mid: &str) -> NewOutbound {
        NewOutbound {
            tenant: tenant.into(),
            queue: "q".into(),
            message_id: mid.into(),
            envelope: Envelope { from: "a@example.test".into(), to: vec!["b@example.test".into()] },
            raw: format!("Message-ID: <{mid}>\r\n\r\nbody\r\n").into_bytes(),
            max_age_ms: 3_600_000,
            save_copy: None,
        }
    }

    fn states(db: &Database, tenant: &str) -> Vec<(String, Option<String>)> {
        db.list_after(tenant, None, 100)
            .unwrap()
            .into_iter()
            .map(|e| (e.payload["state"].as_str().unwrap_or("").to_string(), e.payload["previous_state"].as_str().map(str::to_string)))
            .collect()
    }

    #[test]
    fn every_state_change_writes_one_event_and_due_rows_come_in_order() {
        let (_tmp, path) = temp_db("outbox-life");
        let db = Database::open(&path).unwrap();
        let a = db.enqueue(&new("t", "a@x"), 1000).unwrap();
        let b = db.enqueue(&new("t", "b@x"), 1001).unwrap();
        assert_eq!(a.state, OutboxState::Queued);
        let due = db.take_due("t", "q", 10, 1000).unwrap();
        assert_eq!(due.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), [a.id.as_str()], "b is not due yet at 1000");
        assert_eq!(due[0].raw, new("t", "a@x").raw, "the bytes fixed at enqueue");
        db.record_commit_point(&a.id, 1100).unwrap();
        assert_eq!(db.get("t", &a.id, false).unwrap().unwrap().state, OutboxState::InFlight);
        // A commit point is only for a queued row.
        assert!(db.record_commit_point(&a.id, 1100).is_err());
        let delivered = RecordedOutcome { state: OutboxState::Delivered, next_attempt_at_ms: 0, last_reply: Some("250 ok".into()), explanation: None };
        db.record_outcome(&a.id, &delivered, 1200).unwrap();
        let retry = RecordedOutcome { state: OutboxState::Queued, next_attempt_at_ms: 61_000, last_reply: Some("451 busy".into()), explanation: None };
        db.record_outcome(&b.id, &retry, 1300).unwrap();
        let rb = db.get("t", &b.id, false).unwrap().unwrap();
        assert_eq!((rb.state, rb.attempts, rb.next_attempt_at_ms), (OutboxState::Queued, 1, 61_000));
        assert!(db.take_due("t", "q", 10, 60_999).unwrap().is_empty());
        assert_eq!(db.take_due("t", "q", 10, 61_000).unwrap().len(), 1);
        let got = states(&db, "t");
        let want: Vec<(String, Option<String>)> = [("queued", None), ("queued", None), ("in-flight", Some("queued")), ("delivered", Some("in-flight")), ("queued", Some("queued"))]
            .into_iter()
            .map(|(s, p)| (s.to_string(), p.map(str::to_string)))
            .collect();
        assert_eq!(got, want);
        // A delivered row cannot be resent, cancelled or marked again.
        for e in [db.resend("t", &a.id, 2000).unwrap_err(), db.cancel("t", &a.id, 2000).unwrap_err(), Outbox::mark_delivered(&db, "t", &a.id, 2000).unwrap_err()] {
            assert!(e.to_string().contains("is delivered"), "{e}");
            let HostError::Refused(r) = &e else { panic!("not a refused transition: {e:?}") };
            assert_eq!((r.id.as_str(), r.state), (a.id.as_str(), OutboxState::Delivered));
        }
        assert!(matches!(db.cancel("t", "nope", 2000), Err(HostError::NotFound(_))), "an unknown id is not found, not refused");
        assert_eq!(states(&db, "t").len(), 5, "a refused change writes no event");
    }

    /// `count` counts every row of a state (no cap) with the oldest creation and the earliest
    /// due time, per queue and tenant; an outcome (written without its own fsync) leaves the
    /// connection synced for the next commit point.
    #[test]
    fn count_gives_depth_oldest_and_next_due_and_outcomes_leave_commits_synced() {
        let (_tmp, path) = temp_db("outbox-count");
        let db = Database::open(&path).unwrap();
        for i in 0..30 {
            db.enqueue(&new("t", &format!("{i}@x")), 100 + i).unwrap();
        }
        db.enqueue(&new("other", "o@x"), 1).unwrap();
        let c = db.count("t", "q", OutboxState::Queued).unwrap();
        assert_eq!(c, StateCount { rows: 30, oldest_created_at_ms: Some(100), earliest_next_attempt_at_ms: Some(100) });
        assert_eq!(db.count("t", "q", OutboxState::Held).unwrap(), StateCount::default());
        assert_eq!(db.count("t", "other-queue", OutboxState::Queued).unwrap().rows, 0);
        let first = db.take_due("t", "q", 1, 1000).unwrap().remove(0);
        db.record_commit_point(&first.id, 1000).unwrap();
        assert_eq!(db.count("t", "q", OutboxState::InFlight).unwrap().rows, 1);
        let retry = RecordedOutcome { state: OutboxState::Queued, next_attempt_at_ms: 90_000, last_reply: None, explanation: None };
        db.record_outcome(&first.id, &retry, 1100).unwrap();
        let sync: i64 = db.conn.query_row("PRAGMA synchronous", [], |r| r.get(0)).unwrap();
        assert_eq!(sync, 2, "FULL again after the unsynced outcome");
        let c = db.count("t", "q", OutboxState::Queued).unwrap();
        assert_eq!((c.rows, c.oldest_created_at_ms, c.earliest_next_attempt_at_ms), (30, Some(100), Some(101)));
    }

    #[test]
    fn rows_left_in_flight_are_held_then_resent_with_the_same_bytes_or_marked_delivered() {
        let (_tmp, path) = temp_db("outbox-recover");
        let db = Database::open(&path).unwrap();
        let a = db.enqueue(&new("t", "a@x"), 1).unwrap();
        let b = db.enqueue(&new("t", "b@x"), 1).unwrap();
        db.record_commit_point(&a.id, 2).unwrap();
        db.record_commit_point(&b.id, 2).unwrap();
        let why = Explanation { en: "stopped".into(), de: "abgebrochen".into() };
        assert_eq!(db.recover("t", "q", &why, 3).unwrap(), [a.id.clone(), b.id.clone()]);
        let held = db.get("t", &a.id, false).unwrap().unwrap();
        assert_eq!((held.state, held.explanation), (OutboxState::Held, Some(why.clone())));
        assert!(db.take_due("t", "q", 10, 100).unwrap().is_empty(), "held rows are never taken");
        assert!(db.recover("t", "q", &why, 4).unwrap().is_empty());
        let again = db.resend("t", &a.id, 5).unwrap();
        assert_eq!((again.state, again.next_attempt_at_ms, again.explanation), (OutboxState::Queued, 5, None));
        let due = db.take_due("t", "q", 10, 5).unwrap();
        assert_eq!((due[0].message_id.as_str(), due[0].raw.clone()), ("a@x", new("t", "a@x").raw));
        assert_eq!(Outbox::mark_delivered(&db, "t", &b.id, 6).unwrap().state, OutboxState::Delivered);
        assert_eq!(db.cancel("t", &a.id, 7).unwrap().state, OutboxState::Cancelled);
        assert_eq!(db.list("t", None, Some(OutboxState::Cancelled), 10).unwrap().len(), 1);
    }

    #[test]
    fn another_tenants_rows_and_events_are_out_of_reach() {
        let (_tmp, path) = temp_db("outbox-tenants");
        let db = Database::open(&path).unwrap();
        let a = db.enqueue(&new("t1", "a@x"), 1).unwrap();
        db.enqueue(&new("t2", "b@x"), 1).unwrap();
        assert!(db.get("t2", &a.id, false).unwrap().is_none());
        assert!(db.cancel("t2", &a.id, 2).unwrap_err().to_string().contains("has no outbox message"));
        assert_eq!(db.list("t2", None, None, 10).unwrap().len(), 1);
        let t1 = db.list_after("t1", None, 10).unwrap();
        assert_eq!(t1.len(), 1);
        assert!(db.list_after("t2", Some(&t1[0].id), 10).is_err(), "t1's event id is unknown to t2");
    }

    #[test]
    fn events_are_replayed_in_commit_order_and_delivered_failed_or_dead() {
        let (_tmp, path) = temp_db("outbox-events");
        let db = Database::open(&path).unwrap();
        for i in 0..4 {
            db.enqueue(&new("t", &format!("{i}@x")), i).unwrap();
        }
        let all = db.list_after("t", None, 100).unwrap();
        assert_eq!(all.len(), 4);
        let after = db.list_after("t", Some(&all[1].id), 100).unwrap();
        assert_eq!(after.iter().map(|e| e.id.clone()).collect::<Vec<_>>(), [all[2].id.clone(), all[3].id.clone()]);
        assert!(db.list_after("t", Some("01NOSUCHEVENT"), 10).is_err());
        Events::mark_delivered(&db, &all[0].id, 10).unwrap();
        db.mark_failed(&all[1].id, 99).unwrap();
        db.mark_dead(&all[2].id).unwrap();
        let left = db.next_undelivered("t", 10).unwrap();
        assert_eq!(left.iter().map(|e| e.id.clone()).collect::<Vec<_>>(), [all[1].id.clone(), all[3].id.clone()]);
        assert_eq!((left[0].attempts, left[0].next_attempt_at_ms), (1, Some(99)));
        assert!(Events::mark_delivered(&db, "no-such-id", 1).is_err());
        assert_eq!(all[0].kind, crate::store::events::OUTBOX_STATE_CHANGED);
        let _ = MESSAGE_STORED;
    }
}
