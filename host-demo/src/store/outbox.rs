//! The durable outbox: outbound messages composed once, kept with their exact bytes until a
//! sender delivers them, gives up on them or an admin decides (see `ops::outbox` for the sender).
//!
//! States: `queued` -> `in-flight` (the message's final dot is about to be written) ->
//! `delivered` | `queued` again (transient, with backoff) | `failed` (permanent, or too old) |
//! `held` (uncertain: the server may have it; an admin resends it with the same bytes and
//! Message-ID, or marks it delivered). `cancelled` by an admin. Every state change writes an
//! `outbox.state-changed` event in the same transaction (`store::Events`).

use serde::{Deserialize, Serialize};

use crate::error::HostError;

/// Where a row is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutboxState {
    Queued,
    InFlight,
    Delivered,
    Failed,
    Held,
    Cancelled,
}

impl OutboxState {
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxState::Queued => "queued",
            OutboxState::InFlight => "in-flight",
            OutboxState::Delivered => "delivered",
            OutboxState::Failed => "failed",
            OutboxState::Held => "held",
            OutboxState::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<OutboxState> {
        [Self::Queued, Self::InFlight, Self::Delivered, Self::Failed, Self::Held, Self::Cancelled].into_iter().find(|x| x.as_str() == s)
    }
}

impl std::fmt::Display for OutboxState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The SMTP envelope of a row (MAIL FROM and RCPT TO), fixed at enqueue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub from: String,
    pub to: Vec<String>,
}

/// A message to put into the outbox, composed already.
#[derive(Debug, Clone)]
pub struct NewOutbound {
    pub tenant: String,
    pub queue: String,
    pub message_id: String,
    pub envelope: Envelope,
    /// The composed message, exactly as it will be submitted (and resubmitted).
    pub raw: Vec<u8>,
    /// After this long since enqueue, a transient failure becomes `failed`.
    pub max_age_ms: u64,
    /// The mailbox whose `save_sent` folder gets a copy once delivered (replies), if any.
    pub save_copy: Option<String>,
}

/// An English and a German text for the admin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Explanation {
    pub en: String,
    pub de: String,
}

/// One row of the outbox.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    /// A ULID: unique, sortable by creation.
    pub id: String,
    pub tenant: String,
    pub queue: String,
    pub message_id: String,
    pub envelope: Envelope,
    /// Empty unless read for sending (`take_due`, `get` with raw).
    pub raw: Vec<u8>,
    pub size: u64,
    pub state: OutboxState,
    /// Sending attempts that reached an outcome.
    pub attempts: u32,
    pub next_attempt_at_ms: i64,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    /// The server's last reply ("451 4.2.1 Mailbox busy"), or what ended the attempt.
    pub last_reply: Option<String>,
    /// Why it is not delivered, for the admin.
    pub explanation: Option<Explanation>,
    pub max_age_ms: u64,
    pub save_copy: Option<String>,
    /// What became of the copy in the Sent folder (JSON), once tried.
    pub sent_copy: Option<serde_json::Value>,
}

impl OutboxRow {
    /// The payload of the `outbox.state-changed` event for the row in its new state (every
    /// store writes the same).
    pub fn state_event(&self, previous: Option<OutboxState>) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "queue": self.queue,
            "message_id": self.message_id,
            "to": self.envelope.to,
            "state": self.state.as_str(),
            "previous_state": previous.map(OutboxState::as_str),
            "attempts": self.attempts,
            "next_attempt_at_ms": (self.state == OutboxState::Queued).then_some(self.next_attempt_at_ms),
            "last_reply": self.last_reply,
            "explanation": self.explanation,
        })
    }

    /// The row as the API and `mailplug outbox list --json` show it (without its bytes).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "queue": self.queue,
            "message_id": self.message_id,
            "from": self.envelope.from,
            "to": self.envelope.to,
            "size": self.size,
            "state": self.state.as_str(),
            "attempts": self.attempts,
            "next_attempt_at_ms": (self.state == OutboxState::Queued).then_some(self.next_attempt_at_ms),
            "created_at_ms": self.created_at_ms,
            "updated_at_ms": self.updated_at_ms,
            "last_reply": self.last_reply,
            "explanation": self.explanation,
            "max_age_ms": self.max_age_ms,
            "save_copy": self.save_copy,
            "sent_copy": self.sent_copy,
        })
    }
}

/// What a sending attempt ended with, as recorded.
#[derive(Debug, Clone)]
pub struct RecordedOutcome {
    /// `Delivered`, `Queued` (again, at `next_attempt_at_ms`), `Failed` or `Held`.
    pub state: OutboxState,
    pub next_attempt_at_ms: i64,
    pub last_reply: Option<String>,
    pub explanation: Option<Explanation>,
}

/// An outbox change refused because the row is not in a state it may leave that way
/// (`HostError::Refused`; the API answers 409 Conflict).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("outbox message \"{id}\" (Message-ID <{message_id}>) is {state}: only a message that is {} can become {to}", or_list(allowed))]
pub struct RefusedTransition {
    pub id: String,
    pub message_id: String,
    /// Where the row is.
    pub state: OutboxState,
    /// The states the change may start from.
    pub allowed: Vec<OutboxState>,
    pub to: OutboxState,
}

fn or_list(states: &[OutboxState]) -> String {
    states.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" or ")
}

/// How many rows of a queue are in one state, and when the oldest of them was enqueued.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateCount {
    pub rows: u64,
    /// `created_at_ms` of the oldest row in the state (None when there is none).
    pub oldest_created_at_ms: Option<i64>,
    /// The earliest `next_attempt_at_ms` among them (when the queue is next due, for `queued`).
    pub earliest_next_attempt_at_ms: Option<i64>,
}

/// The columns both stores select for a row, in the order `read_row` reads them (`, raw`
/// follows them when the bytes are asked for).
pub(crate) const COLUMNS: &str = "id, tenant, queue, message_id, envelope, size, state, attempts, next_attempt_at_ms, created_at_ms, \
                                  updated_at_ms, last_reply, explanation_en, explanation_de, max_age_ms, save_copy, sent_copy";

/// A store's result row, read by column index (`COLUMNS`' order): each store says how its
/// driver reads a text, an integer and bytes, and what a value it cannot use becomes.
pub(crate) trait OutboxColumns {
    type Error;
    fn text(&self, i: usize) -> Result<Option<String>, Self::Error>;
    fn int(&self, i: usize) -> Result<i64, Self::Error>;
    fn bytes(&self, i: usize) -> Result<Vec<u8>, Self::Error>;
    fn unusable(&self, i: usize, what: String) -> Self::Error;
}

/// The row a store read (see `OutboxColumns`).
pub(crate) fn read_row<C: OutboxColumns>(c: &C, with_raw: bool) -> Result<OutboxRow, C::Error> {
    let text = |i: usize| c.text(i)?.ok_or_else(|| c.unusable(i, "a NULL where text is required".into()));
    let envelope = text(4)?;
    let state = text(6)?;
    let sent_copy = c.text(16)?;
    Ok(OutboxRow {
        id: text(0)?,
        tenant: text(1)?,
        queue: text(2)?,
        message_id: text(3)?,
        envelope: serde_json::from_str(&envelope).map_err(|e| c.unusable(4, format!("outbox envelope: {e}")))?,
        raw: if with_raw { c.bytes(17)? } else { Vec::new() },
        size: c.int(5)?.max(0) as u64,
        state: OutboxState::parse(&state).ok_or_else(|| c.unusable(6, format!("unknown outbox state \"{state}\"")))?,
        attempts: u32::try_from(c.int(7)?.max(0)).unwrap_or(u32::MAX),
        next_attempt_at_ms: c.int(8)?,
        created_at_ms: c.int(9)?,
        updated_at_ms: c.int(10)?,
        last_reply: c.text(11)?,
        explanation: match (c.text(12)?, c.text(13)?) {
            (Some(en), Some(de)) => Some(Explanation { en, de }),
            (Some(en), None) => Some(Explanation { de: en.clone(), en }),
            _ => None,
        },
        max_age_ms: c.int(14)?.max(0) as u64,
        save_copy: c.text(15)?,
        sent_copy: sent_copy.and_then(|s| serde_json::from_str(&s).ok()),
    })
}

/// What a transition sets besides the state and `updated_at_ms`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Change {
    /// The attempt reached an outcome: `attempts` goes up by one.
    pub count_attempt: bool,
    /// When the row is due next (`None`: unchanged).
    pub next_attempt_at_ms: Option<i64>,
    /// `Some(reply)` sets `last_reply` (to nothing with `Some(None)`); `None` leaves it.
    pub last_reply: Option<Option<String>>,
    /// `Some(explanation)` sets the explanation (clears it with `Some(None)`); `None` leaves it.
    pub explanation: Option<Option<Explanation>>,
}

impl Change {
    /// `last_reply` as an UPDATE takes it: whether to set it, and to what.
    pub fn reply_update(&self) -> (bool, Option<&str>) {
        match &self.last_reply {
            Some(r) => (true, r.as_deref()),
            None => (false, None),
        }
    }

    /// The explanation as an UPDATE takes it: whether to set it, the English and the German text.
    pub fn explanation_update(&self) -> (bool, Option<&str>, Option<&str>) {
        match &self.explanation {
            Some(e) => (true, e.as_ref().map(|e| e.en.as_str()), e.as_ref().map(|e| e.de.as_str())),
            None => (false, None, None),
        }
    }
}

/// One state change of a row, the same in every store: the states it may start from, the
/// state it goes to and what else it sets. A store applies it (`Outbox::apply`) with its event
/// in one transaction that reads the row, `check`s it and writes the change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub from: &'static [OutboxState],
    pub to: OutboxState,
    pub change: Change,
    /// Made by the queue's sender (commit point, outcome, recovery), not by an admin: a store
    /// view fenced by the queue's lease refuses it once the lease is lost.
    pub by_sender: bool,
    /// Must be on disk before the call returns. Only an outcome may wait for the next synced
    /// commit: its row was synced `in-flight` at the commit point, so losing the outcome leaves
    /// the row `in-flight`, which the next drain's `recover` holds (never resent silently).
    pub synced: bool,
}

impl Transition {
    fn new(from: &'static [OutboxState], to: OutboxState, change: Change) -> Transition {
        Transition { from, to, change, by_sender: false, synced: true }
    }

    fn of_sender(self) -> Transition {
        Transition { by_sender: true, ..self }
    }

    /// `queued` -> `in-flight`, before the write that carries the message's final dot.
    pub fn commit_point() -> Transition {
        Transition::new(&[OutboxState::Queued], OutboxState::InFlight, Change::default()).of_sender()
    }

    /// An attempt's outcome (counted), from `queued` or `in-flight`; the next attempt's time
    /// only when it is queued again.
    pub fn outcome(o: &RecordedOutcome) -> Transition {
        let change = Change {
            count_attempt: true,
            next_attempt_at_ms: (o.state == OutboxState::Queued).then_some(o.next_attempt_at_ms),
            last_reply: Some(o.last_reply.clone()),
            explanation: Some(o.explanation.clone()),
        };
        Transition { synced: false, ..Transition::new(&[OutboxState::Queued, OutboxState::InFlight], o.state, change).of_sender() }
    }

    /// A row left `in-flight` by a sender that stopped is held, with why.
    pub fn recover(why: &Explanation) -> Transition {
        let change = Change { explanation: Some(Some(why.clone())), ..Change::default() };
        Transition::new(&[OutboxState::InFlight], OutboxState::Held, change).of_sender()
    }

    /// Admin: a queued row is held.
    pub fn hold() -> Transition {
        let why = Explanation {
            en: "held by an admin: not sent until it is resent".into(),
            de: "von einem Administrator angehalten: wird erst nach \"erneut senden\" verschickt".into(),
        };
        let change = Change { explanation: Some(Some(why)), ..Change::default() };
        Transition::new(&[OutboxState::Queued], OutboxState::Held, change)
    }

    /// Admin: a held or failed row is queued again, due at `now_ms`, its explanation cleared.
    pub fn resend(now_ms: i64) -> Transition {
        let change = Change { next_attempt_at_ms: Some(now_ms), explanation: Some(None), ..Change::default() };
        Transition::new(&[OutboxState::Held, OutboxState::Failed], OutboxState::Queued, change)
    }

    /// Admin: a held row was delivered after all.
    pub fn mark_delivered() -> Transition {
        let change = Change { explanation: Some(None), ..Change::default() };
        Transition::new(&[OutboxState::Held], OutboxState::Delivered, change)
    }

    /// Admin: a queued, held or failed row is not to be sent.
    pub fn cancel() -> Transition {
        Transition::new(&[OutboxState::Queued, OutboxState::Held, OutboxState::Failed], OutboxState::Cancelled, Change::default())
    }

    /// Whether `before` may make this change; a row in another state is refused, naming both.
    pub fn check(&self, before: &OutboxRow) -> Result<(), HostError> {
        if self.from.contains(&before.state) {
            return Ok(());
        }
        Err(HostError::Refused(RefusedTransition {
            id: before.id.clone(),
            message_id: before.message_id.clone(),
            state: before.state,
            allowed: self.from.to_vec(),
            to: self.to,
        }))
    }
}

/// The error for an outbox id that is not there (or belongs to another tenant than `tenant`).
pub fn not_found(tenant: Option<&str>, id: &str) -> HostError {
    HostError::NotFound(match tenant {
        Some(t) => format!("tenant \"{t}\" has no outbox message \"{id}\""),
        None => format!("no outbox message \"{id}\""),
    })
}

/// The outbox as a store keeps it. Every state change writes its `outbox.state-changed` event
/// in the same transaction. `tenant` scopes the admin calls: an id of another tenant is not found.
/// A store implements the reads and `apply` / `ids_in`; the state changes are the `Transition`s
/// above, the same for every store.
pub trait Outbox {
    /// Commits a new `queued` row, due now; returns it (without `raw`). Accepted means committed.
    fn enqueue(&self, m: &NewOutbound, now_ms: i64) -> Result<OutboxRow, HostError>;
    /// Queued rows of a queue due at `now_ms`, oldest first, with `raw`. Changes nothing: the
    /// caller holds the queue's sender lock (`ops::outbox`).
    fn take_due(&self, tenant: &str, queue: &str, limit: usize, now_ms: i64) -> Result<Vec<OutboxRow>, HostError>;
    /// Applies `t` to row `id` (of `tenant`, when given) with its event in one transaction:
    /// reads and locks the row (`not_found` when missing), `Transition::check`s it, writes the
    /// change, returns the row as changed. Store side of the state changes below.
    fn apply(&self, tenant: Option<&str>, id: &str, t: Transition, now_ms: i64) -> Result<OutboxRow, HostError>;
    /// Ids of a queue's rows in `state`, oldest first.
    fn ids_in(&self, tenant: &str, queue: &str, state: OutboxState) -> Result<Vec<String>, HostError>;

    /// `queued` -> `in-flight`, synced to disk before it returns: called before the write that
    /// carries the message's final dot.
    fn record_commit_point(&self, id: &str, now_ms: i64) -> Result<(), HostError> {
        self.apply(None, id, Transition::commit_point(), now_ms).map(drop)
    }
    /// The outcome of an attempt (counts the attempt). From `queued` or `in-flight` only.
    fn record_outcome(&self, id: &str, outcome: &RecordedOutcome, now_ms: i64) -> Result<(), HostError> {
        self.apply(None, id, Transition::outcome(outcome), now_ms).map(drop)
    }
    /// Rows of a queue left `in-flight` by a sender that stopped (crash, kill) become `held`:
    /// never resent silently. Returns their ids. Call only while holding the sender lock.
    fn recover(&self, tenant: &str, queue: &str, why: &Explanation, now_ms: i64) -> Result<Vec<String>, HostError> {
        let ids = self.ids_in(tenant, queue, OutboxState::InFlight)?;
        for id in &ids {
            self.apply(Some(tenant), id, Transition::recover(why), now_ms)?;
        }
        Ok(ids)
    }
    /// Admin: a queued row is held (not sent until resent).
    fn hold(&self, tenant: &str, id: &str, now_ms: i64) -> Result<OutboxRow, HostError> {
        self.apply(Some(tenant), id, Transition::hold(), now_ms)
    }
    /// Admin: a held or failed row is queued again, due now, with the same bytes and Message-ID.
    fn resend(&self, tenant: &str, id: &str, now_ms: i64) -> Result<OutboxRow, HostError> {
        self.apply(Some(tenant), id, Transition::resend(now_ms), now_ms)
    }
    /// Admin: a held row was delivered after all (the recipients have it).
    fn mark_delivered(&self, tenant: &str, id: &str, now_ms: i64) -> Result<OutboxRow, HostError> {
        self.apply(Some(tenant), id, Transition::mark_delivered(), now_ms)
    }
    /// Admin: a queued, held or failed row is not to be sent.
    fn cancel(&self, tenant: &str, id: &str, now_ms: i64) -> Result<OutboxRow, HostError> {
        self.apply(Some(tenant), id, Transition::cancel(), now_ms)
    }
    /// Rows of a tenant (of one queue, in one state, when given), oldest first, without `raw`.
    fn list(&self, tenant: &str, queue: Option<&str>, state: Option<OutboxState>, limit: usize) -> Result<Vec<OutboxRow>, HostError>;
    /// One row, with `raw` when asked.
    fn get(&self, tenant: &str, id: &str, with_raw: bool) -> Result<Option<OutboxRow>, HostError>;
    /// Records what became of the copy in the Sent folder (no state change).
    fn record_sent_copy(&self, id: &str, copy: &serde_json::Value, now_ms: i64) -> Result<(), HostError>;
    /// Adds the admin explanation to a row's last outcome (the guest explains after the batch).
    fn record_explanation(&self, id: &str, explanation: &Explanation) -> Result<(), HostError>;
    /// How many rows of a queue are in `state`, the oldest one's creation and the earliest next
    /// attempt (the metrics and the queue actor's sleep: counted by the store, not by listing).
    fn count(&self, tenant: &str, queue: &str, state: OutboxState) -> Result<StateCount, HostError>;
}
