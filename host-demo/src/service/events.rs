//! Events in `mailplug serve`: the store's `events` table as the webhook deliverer's
//! [`EventSource`], the list of tenants with a `[webhook]` table the deliverer follows, and
//! the Server-Sent Events stream `GET /v1/tenants/{t}/events` (docs/API.md "Events").
//!
//! The stream replays the tenant's events after `Last-Event-ID` (or `?after=`; from the first
//! when neither is given) through `Events::list_after`, then polls the table every second for
//! new ones. Each connection has a bounded buffer: a client that does not read stops the
//! polling for its stream (nothing piles up in memory); it resumes where it left off. A
//! comment line goes out every 15 s (`MAILPLUG_SSE_HEARTBEAT_SECS`) so that proxies keep the connection open. The stream
//! ends when the tenant is removed or the service stops.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use tokio::sync::{broadcast, mpsc};

use super::api::{tenant, ApiError};
use super::metrics::TenantLabels;
use super::webhook::{self, EventSource, Target};
use super::Shared;
use crate::error::HostError;
use crate::store::events::{Event, Events};
use crate::store::Store;

/// Events read from the store at a time.
const PAGE: usize = 100;
/// Events buffered per SSE connection.
pub const SSE_BUFFER: usize = 64;
/// How often a stream looks for new events.
pub const SSE_POLL: Duration = Duration::from_secs(1);
/// The heartbeat comment's interval unless `MAILPLUG_SSE_HEARTBEAT_SECS` says otherwise.
pub const SSE_HEARTBEAT: Duration = Duration::from_secs(15);

/// Tuning for tests and operators, read once from the environment of `mailplug serve`
/// (docs/API.md "Events", docs/WEBHOOKS.md "Retries"): a whole number of seconds within
/// `min..=max`; a value that is missing, not a number or out of range keeps `default` (with a
/// warning for the last two).
fn env_secs(name: &str, default: Duration, min: u64, max: u64) -> Duration {
    let v = std::env::var(name).ok();
    secs_within(v.as_deref(), min, max).unwrap_or_else(|| {
        if let Some(v) = &v {
            tracing::warn!(variable = name, value = %v, min, max, default_secs = default.as_secs(), "ignored: not a whole number of seconds in range");
        }
        default
    })
}

/// `value` as whole seconds when it is a number within `min..=max`.
fn secs_within(value: Option<&str>, min: u64, max: u64) -> Option<Duration> {
    value?.trim().parse::<u64>().ok().filter(|n| (min..=max).contains(n)).map(Duration::from_secs)
}

/// The SSE heartbeat interval: `MAILPLUG_SSE_HEARTBEAT_SECS` (1 to 3600), else 15 s.
pub fn sse_heartbeat() -> Duration {
    static H: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *H.get_or_init(|| env_secs("MAILPLUG_SSE_HEARTBEAT_SECS", SSE_HEARTBEAT, 1, 3600))
}

/// The webhook deliverer's policy: the defaults, with the first retry wait from
/// `MAILPLUG_WEBHOOK_RETRY_SECS` (1 to 3600), the maximum age of an event from
/// `MAILPLUG_WEBHOOK_MAX_AGE_SECS` (1 to 30 days) and the poll for events nobody announced
/// (written by another node or process) from `MAILPLUG_WEBHOOK_POLL_SECS` (1 to 3600).
pub fn webhook_policy() -> webhook::Policy {
    let d = webhook::Policy::default();
    let backoff_first = env_secs("MAILPLUG_WEBHOOK_RETRY_SECS", d.backoff_first, 1, 3600);
    let max_age = env_secs("MAILPLUG_WEBHOOK_MAX_AGE_SECS", d.max_age, 1, 30 * 24 * 3600);
    let poll_interval = env_secs("MAILPLUG_WEBHOOK_POLL_SECS", d.poll_interval, 1, 3600);
    webhook::Policy { backoff_first, backoff_max: d.backoff_max.max(backoff_first), max_age, poll_interval, ..d }
}

/// The service's events table for the webhook deliverer, with its own connection; failures
/// and dead events are counted in the metrics (by tenant).
pub struct StoreEvents {
    db: Mutex<Store>,
    shared: Arc<Shared>,
    /// The tenant of each event id handed out and not yet settled (for the metrics' label).
    owners: Mutex<std::collections::HashMap<String, String>>,
}

impl StoreEvents {
    pub fn open(shared: Arc<Shared>) -> Result<StoreEvents, HostError> {
        Ok(StoreEvents { db: Mutex::new(shared.store.open()?), shared, owners: Mutex::default() })
    }

    /// A refused mark (`LeaseLost`: another node took the tenant's webhook over) drops the
    /// lease on this node at once.
    fn with<T>(&self, f: impl FnOnce(&Store) -> Result<T, HostError>) -> Result<T, HostError> {
        let r = f(&self.db.lock().unwrap_or_else(|p| p.into_inner()));
        if let (Err(e), Some(leases)) = (&r, &self.shared.leases) {
            leases.lost_by(e);
        }
        r
    }

    fn owner(&self, id: &str, settled: bool) -> String {
        let mut m = self.owners.lock().unwrap_or_else(|p| p.into_inner());
        if settled {
            m.remove(id).unwrap_or_default()
        } else {
            m.get(id).cloned().unwrap_or_default()
        }
    }
}

impl EventSource for StoreEvents {
    fn next_undelivered(&self, tenant: &str, limit: usize) -> Result<Vec<webhook::Event>, HostError> {
        let list = self.with(|db| db.next_undelivered(tenant, limit))?;
        let mut owners = self.owners.lock().unwrap_or_else(|p| p.into_inner());
        // Bounded: a tenant's pending page at a time per tenant.
        if owners.len() > 10_000 {
            owners.clear();
        }
        Ok(list
            .into_iter()
            .map(|e| {
                owners.insert(e.id.clone(), e.tenant.clone());
                webhook::Event {
                    id: e.id,
                    tenant: e.tenant,
                    kind: e.kind,
                    payload: e.payload,
                    created_at_ms: u64::try_from(e.created_at_ms).unwrap_or(0),
                    attempts: e.attempts,
                }
            })
            .collect())
    }

    fn mark_delivered(&self, id: &str) -> Result<(), HostError> {
        self.with(|db| Events::mark_delivered(db, id, crate::driver::now_ms() as i64))?;
        self.owner(id, true);
        Ok(())
    }

    fn mark_failed(&self, id: &str, next_attempt_at_ms: u64) -> Result<(), HostError> {
        self.with(|db| db.mark_failed(id, i64::try_from(next_attempt_at_ms).unwrap_or(i64::MAX)))?;
        let tenant = self.owner(id, false);
        self.shared.metrics.webhook_failures.get_or_create(&TenantLabels { tenant }).inc();
        Ok(())
    }

    /// With leases: a source whose marks carry the target's `webhook:<tenant>` lease.
    fn for_target(&self, target: &Target) -> Option<Arc<dyn EventSource>> {
        let fence = target.fence.clone()?;
        match self.shared.store.open() {
            Ok(store) => Some(Arc::new(StoreEvents { db: Mutex::new(store.fenced(fence)), shared: self.shared.clone(), owners: Mutex::default() })),
            Err(e) => {
                // Unfenced marks would be wrong: a source that refuses every call instead.
                tracing::warn!(tenant = %target.tenant, error = %e, "cannot open the store for the webhook deliverer");
                Some(Arc::new(Unavailable(e.to_string())))
            }
        }
    }

    fn mark_dead(&self, id: &str) -> Result<(), HostError> {
        self.with(|db| db.mark_dead(id))?;
        let tenant = self.owner(id, true);
        self.shared.metrics.webhook_dead.get_or_create(&TenantLabels { tenant }).inc();
        Ok(())
    }
}

/// A source that cannot be used (the store did not open): every call fails, saying why.
struct Unavailable(String);

impl EventSource for Unavailable {
    fn next_undelivered(&self, _: &str, _: usize) -> Result<Vec<webhook::Event>, HostError> {
        Err(HostError::Storage(self.0.clone()))
    }
    fn mark_delivered(&self, _: &str) -> Result<(), HostError> {
        Err(HostError::Storage(self.0.clone()))
    }
    fn mark_failed(&self, _: &str, _: u64) -> Result<(), HostError> {
        Err(HostError::Storage(self.0.clone()))
    }
    fn mark_dead(&self, _: &str) -> Result<(), HostError> {
        Err(HostError::Storage(self.0.clone()))
    }
}

/// Sets (Some) or removes (None) a tenant's webhook in the list the deliverer follows.
pub fn set_webhook(shared: &Shared, tenant: &str, target: Option<Target>) {
    shared.webhooks.send_if_modified(|list| {
        let before = list.clone();
        list.retain(|t| t.tenant != tenant);
        list.extend(target);
        list.sort_by(|a, b| a.tenant.cmp(&b.tenant));
        *list != before
    });
}

/// Starts the webhook deliverer on the service's store; it stops with the service. Events
/// committed by this node (`Shared::events_written`) wake the tenants' tasks at once; the
/// poll (`MAILPLUG_WEBHOOK_POLL_SECS`, 2 s) finds those of other nodes.
pub fn start_webhooks(shared: &Arc<Shared>) -> Result<(), HostError> {
    let source: Arc<dyn EventSource> = Arc::new(StoreEvents::open(shared.clone())?);
    let rx = shared.webhooks.subscribe();
    let wake = Arc::new(tokio::sync::Notify::new());
    let task = webhook::run_with(source, rx, shared.root.clone(), webhook_policy(), wake.clone());
    tokio::spawn(shared.all.track_future(task));
    let (mut written, stop) = (shared.events_written.subscribe(), shared.root.clone());
    tokio::spawn(async move {
        loop {
            tokio::select! {
                r = written.recv() => match r {
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => wake.notify_waiters(),
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                _ = stop.cancelled() => break,
            }
        }
    });
    Ok(())
}

/// The events routes, merged into `api::router`.
pub fn routes() -> Router<Arc<Shared>> {
    Router::new().route("/v1/tenants/{t}/events", get(stream))
}

#[derive(Deserialize)]
struct After {
    after: Option<String>,
}

fn sse_event(e: &Event) -> SseEvent {
    let data = serde_json::json!({
        "id": e.id, "tenant": e.tenant, "kind": e.kind, "created_at_ms": e.created_at_ms, "data": e.payload,
    });
    SseEvent::default().id(e.id.clone()).event(e.kind.clone()).data(data.to_string())
}

async fn stream(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(t): Path<String>,
    Query(q): Query<After>,
) -> Result<Response, ApiError> {
    tenant(&s, &headers, &t)?;
    let header_id = headers.get("last-event-id").and_then(|v| v.to_str().ok()).map(|v| v.trim().to_string());
    let after = header_id.or(q.after).filter(|a| !a.is_empty());
    // Before the first page is read, so a message stored meanwhile wakes the stream.
    let written = s.events_written.subscribe();
    // The first page now, so that an unknown id is a 404 and not an empty stream.
    let (t2, a2) = (t.clone(), after.clone());
    let first = s.read_store(move |db| db.list_after(&t2, a2.as_deref(), PAGE)).await.map_err(|e| match e {
        HostError::NotFound(m) => ApiError::new(
            StatusCode::NOT_FOUND,
            format!("{m}; reconnect without Last-Event-ID (or ?after=) to replay all the tenant's events"),
        ),
        other => ApiError::host(other),
    })?;
    let (tx, rx) = mpsc::channel::<SseEvent>(SSE_BUFFER);
    tokio::spawn(feed(s.clone(), t, after, first, tx, written));
    let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (Ok::<_, Infallible>(e), rx)) });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(sse_heartbeat()).text("heartbeat")).into_response())
}

/// Sends the tenant's events to one SSE connection until it closes, the tenant goes or the
/// service stops.
/// The tenant's stored messages wake the stream at once (`written`); `SSE_POLL` still finds
/// the other events (the outbox's) and anything written by another process.
async fn feed(
    s: Arc<Shared>,
    t: String,
    mut after: Option<String>,
    mut page: Vec<Event>,
    tx: mpsc::Sender<SseEvent>,
    mut written: broadcast::Receiver<String>,
) {
    loop {
        let full = page.len() >= PAGE;
        for e in &page {
            // Waits while the client's buffer is full: a slow reader slows only its own stream.
            tokio::select! {
                sent = tx.send(sse_event(e)) => if sent.is_err() { return },
                _ = s.root.cancelled() => return,
            }
            after = Some(e.id.clone());
        }
        if !full {
            tokio::select! {
                _ = tokio::time::sleep(SSE_POLL) => {}
                _ = written_for(&mut written, &t) => {}
                _ = tx.closed() => return,
                _ = s.root.cancelled() => return,
            }
        }
        if !s.board.read(|b| b.tenants.contains_key(&t)) {
            return;
        }
        let a = after.clone();
        let t2 = t.clone();
        // What was announced so far is in the page read now.
        while matches!(written.try_recv(), Ok(_) | Err(broadcast::error::TryRecvError::Lagged(_))) {}
        page = match s.read_store(move |db| db.list_after(&t2, a.as_deref(), PAGE)).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(tenant = %t, error = %e, "reading events for an SSE stream failed; the stream ends");
                return;
            }
        };
    }
}

/// Returns when `tenant`'s run stored messages (or when announcements were missed, so the
/// stream reads to be sure); never when the announcements end (the poll goes on).
async fn written_for(rx: &mut broadcast::Receiver<String>, tenant: &str) {
    loop {
        match rx.recv().await {
            Ok(t) if t == tenant => return,
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(_)) => return,
            Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tuning_values_are_whole_seconds_within_their_range() {
        assert_eq!(secs_within(Some("2"), 1, 3600), Some(Duration::from_secs(2)));
        assert_eq!(secs_within(Some(" 3600 "), 1, 3600), Some(Duration::from_secs(3600)));
        for bad in [None, Some(""), Some("0"), Some("3601"), Some("-1"), Some("1.5"), Some("2s"), Some("99999999999999999999999")] {
            assert_eq!(secs_within(bad, 1, 3600), None, "{bad:?}");
        }
    }

    #[test]
    fn the_webhook_policy_keeps_its_defaults_without_the_variables() {
        // The test environment sets none of the variables.
        let (p, d) = (webhook_policy(), webhook::Policy::default());
        assert_eq!((p.backoff_first, p.backoff_max, p.max_age), (d.backoff_first, d.backoff_max, d.max_age));
        assert_eq!(sse_heartbeat(), SSE_HEARTBEAT);
    }

    /// A stream wakes for its own tenant's stored messages, not for another tenant's, and
    /// after missed announcements (it reads the store to be sure).
    #[tokio::test]
    async fn a_stream_wakes_for_its_tenants_stored_messages_only() {
        let tx = broadcast::Sender::<String>::new(4);
        let mut rx = tx.subscribe();
        tx.send("other".into()).unwrap();
        let quick = Duration::from_millis(50);
        assert!(tokio::time::timeout(quick, written_for(&mut rx, "mine")).await.is_err(), "woken by another tenant");
        tx.send("other".into()).unwrap();
        tx.send("mine".into()).unwrap();
        assert!(tokio::time::timeout(quick, written_for(&mut rx, "mine")).await.is_ok(), "not woken by its own tenant");
        for _ in 0..10 {
            tx.send("other".into()).unwrap();
        }
        assert!(tokio::time::timeout(quick, written_for(&mut rx, "mine")).await.is_ok(), "missed announcements must wake it");
        drop(tx);
        assert!(tokio::time::timeout(quick, written_for(&mut rx, "mine")).await.is_err(), "no sender: the poll goes on alone");
    }
}
