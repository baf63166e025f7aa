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

/// The outbox as a store keeps it. Every state change writes its `outbox.state-changed` event
/// in the same transaction. `tenant` scopes the admin calls: an id of another tenant is not found.
pub trait Outbox {
    /// Commits a new `queued` row, due now; returns it (without `raw`). Accepted means committed.
    fn enqueue(&self, m: &NewOutbound, now_ms: i64) -> Result<OutboxRow, HostError>;
    /// Queued rows of a queue due at `now_ms`, oldest first, with `raw`. Changes nothing: the
    /// caller holds the queue's sender lock (`ops::outbox`).
    fn take_due(&self, tenant: &str, queue: &str, limit: usize, now_ms: i64) -> Result<Vec<OutboxRow>, HostError>;
    /// `queued` -> `in-flight`, synced to disk before it returns: called before the write that
    /// carries the message's final dot.
    fn record_commit_point(&self, id: &str, now_ms: i64) -> Result<(), HostError>;
    /// The outcome of an attempt (counts the attempt). From `queued` or `in-flight` only.
    fn record_outcome(&self, id: &str, outcome: &RecordedOutcome, now_ms: i64) -> Result<(), HostError>;
    /// Rows of a queue left `in-flight` by a sender that stopped (crash, kill) become `held`:
    /// never resent silently. Returns their ids. Call only while holding the sender lock.
    fn recover(&self, tenant: &str, queue: &str, why: &Explanation, now_ms: i64) -> Result<Vec<String>, HostError>;
    /// Admin: a queued row is held (not sent until resent).
    fn hold(&self, tenant: &str, id: &str, now_ms: i64) -> Result<OutboxRow, HostError>;
    /// Admin: a held or failed row is queued again, due now, with the same bytes and Message-ID.
    fn resend(&self, tenant: &str, id: &str, now_ms: i64) -> Result<OutboxRow, HostError>;
    /// Admin: a held row was delivered after all (the recipients have it).
    fn mark_delivered(&self, tenant: &str, id: &str, now_ms: i64) -> Result<OutboxRow, HostError>;
    /// Admin: a queued, held or failed row is not to be sent.
    fn cancel(&self, tenant: &str, id: &str, now_ms: i64) -> Result<OutboxRow, HostError>;
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
