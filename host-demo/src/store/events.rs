//! Events for the platform: every stored message (`message.stored`) and every outbox state
//! change (`outbox.state-changed`), written in the same transaction as what they describe
//! (the transactional outbox pattern), so a crash never keeps one without the other.
//!
//! Each event has a ULID `id` (the receiver's dedup key) and is kept in commit order: the
//! store numbers events as it commits them, so `list_after` (SSE replay from
//! `Last-Event-ID`) never skips an event committed after one already read. The webhook
//! deliverer reads `next_undelivered` and marks each event delivered, failed (retry at a
//! time) or dead.

use serde::Serialize;

use crate::error::HostError;

pub const MESSAGE_STORED: &str = "message.stored";
pub const OUTBOX_STATE_CHANGED: &str = "outbox.state-changed";

/// One event as stored.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// A ULID, unique across stores: the dedup key.
    pub id: String,
    pub tenant: String,
    pub kind: String,
    pub payload: serde_json::Value,
    pub created_at_ms: i64,
    /// When the webhook got it (2xx).
    pub delivered_at_ms: Option<i64>,
    /// Webhook attempts that failed.
    pub attempts: u32,
    /// When the webhook deliverer may try again (after a failure).
    pub next_attempt_at_ms: Option<i64>,
    /// The deliverer gave up on it.
    pub dead: bool,
}

/// The events as a store keeps them (written by the store itself, with what they describe).
pub trait Events {
    /// The oldest events of a tenant neither delivered nor dead, in commit order (also those
    /// whose `next_attempt_at_ms` is still ahead: delivery is in order, the caller waits).
    fn next_undelivered(&self, tenant: &str, limit: usize) -> Result<Vec<Event>, HostError>;
    fn mark_delivered(&self, id: &str, now_ms: i64) -> Result<(), HostError>;
    /// A failed delivery: counts the attempt, next try at `next_attempt_at_ms`.
    fn mark_failed(&self, id: &str, next_attempt_at_ms: i64) -> Result<(), HostError>;
    /// The deliverer gave up: no more attempts.
    fn mark_dead(&self, id: &str) -> Result<(), HostError>;
    /// A tenant's events committed after `after_id` (from the first when None), in commit
    /// order. An id the tenant has no event with is `NotFound`, so a client never silently
    /// replays everything or nothing.
    fn list_after(&self, tenant: &str, after_id: Option<&str>, limit: usize) -> Result<Vec<Event>, HostError>;
}
