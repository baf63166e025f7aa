//! The outbox in `mailplug serve`: one queue actor per outbound queue of each tenant, running
//! `ops::outbox::drain` on the service's store, and the API routes that enqueue, list and
//! decide on outbox rows (docs/API.md "Outbox").
//!
//! A queue actor drains when rows are due: woken by an enqueue or a resend through the API,
//! at the earliest next attempt time of its queued rows, or at the latest every `MAX_IDLE`.
//! Each drain runs under the tenant's and the service's concurrency caps, on the actors'
//! thread (the store's connection and the guest calls are not `Send`). The tenant's token is
//! looked at between drains only: a batch in progress is finished (each row's outcome is
//! recorded as the guest learns it) before the actor stops.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::api::{tenant, ApiError};
use super::Shared;
use crate::config::TenantConfig;
use crate::error::HostError;
use crate::ops::outbox::{Compose, DrainConfig, DEFAULT_MAX_AGE};
use crate::ops::{Outgoing, Reply};
use crate::store::postgres::Fence;
use crate::store::{Outbox, OutboxRow, OutboxState, Store};

/// The longest a queue actor sleeps without looking at its queue.
pub const MAX_IDLE: Duration = Duration::from_secs(30);
/// With leases (several nodes): the longest a queue sender sleeps, since rows enqueued through
/// another node's API do not wake it.
pub const MAX_IDLE_SHARED: Duration = Duration::from_secs(2);

/// The wake-up of each queue actor, by (tenant, queue).
#[derive(Default)]
pub struct Wakes {
    inner: Mutex<HashMap<(String, String), Arc<Notify>>>,
}

impl Wakes {
    /// The queue's wake-up (made on first use).
    pub fn of(&self, tenant: &str, queue: &str) -> Arc<Notify> {
        let mut m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        m.entry((tenant.to_string(), queue.to_string())).or_default().clone()
    }

    /// Wakes the queue's actor (or its next wait, when it is draining now).
    pub fn wake(&self, tenant: &str, queue: &str) {
        self.of(tenant, queue).notify_one();
    }
}

/// One outbound queue's sender.
pub struct QueueActor {
    pub shared: Arc<Shared>,
    pub cfg: Arc<TenantConfig>,
    pub queue: String,
    pub cancel: CancellationToken,
    pub tenant_slots: Arc<Semaphore>,
    /// With leases: the queue's lease, which the sender's outbox transitions carry
    /// (`Store::fenced`); its loss (a transition refused) cancels `cancel` at once.
    pub fence: Option<Fence>,
}

impl QueueActor {
    /// Runs until the token is cancelled.
    pub async fn run(self) {
        let span = tracing::info_span!("queue", tenant = %self.cfg.tenant, queue = %self.queue);
        tracing::Instrument::instrument(self.run_inner(), span).await;
    }

    async fn run_inner(&self) {
        let wake = self.shared.outbox.of(&self.cfg.tenant, &self.queue);
        let store = match self.shared.store.open() {
            Ok(db) => match &self.fence {
                Some(f) => db.fenced(f.clone()),
                None => db,
            },
            Err(e) => {
                warn!(error = %e, "the queue actor cannot open the store; the queue is not sent");
                return;
            }
        };
        info!("queue actor started");
        let mut failures = 0u32;
        while !self.cancel.is_cancelled() {
            let wait = match self.drain_once(&store).await {
                Some(Ok(more)) => {
                    failures = 0;
                    if more {
                        Duration::ZERO
                    } else if self.fence.is_some() {
                        self.until_next_due(&store).min(MAX_IDLE_SHARED)
                    } else {
                        self.until_next_due(&store)
                    }
                }
                Some(Err(e)) if self.shared.leases.as_ref().is_some_and(|l| l.lost_by(&e)) => {
                    warn!(error = %e.to_string().replace('\n', " "), "the queue's lease was lost; another node sends it now");
                    break;
                }
                Some(Err(e)) => {
                    let wait = self.shared.options.backoff.delay(failures).min(MAX_IDLE);
                    failures = failures.saturating_add(1);
                    warn!(error = %e.to_string().replace('\n', " "), retry_in_secs = wait.as_secs(), "draining the outbox failed");
                    wait
                }
                None => break,
            };
            self.update_metrics(&store);
            if wait.is_zero() {
                continue;
            }
            tokio::select! {
                _ = self.cancel.cancelled() => break,
                _ = wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
        info!("queue actor stopped");
    }

    /// One drain under both caps: Ok(true) when a full batch went (more may be due), None when
    /// the tenant stopped while waiting for a slot.
    async fn drain_once(&self, store: &Store) -> Option<Result<bool, HostError>> {
        let now = crate::driver::now_ms() as i64;
        // Nothing due: no slot taken, no lock file touched.
        match store.take_due(&self.cfg.tenant, &self.queue, 1, now) {
            Ok(rows) if rows.is_empty() && !self.any_in_flight(store) => return Some(Ok(false)),
            Err(e) => return Some(Err(e)),
            _ => {}
        }
        let slots = async {
            let tenant = self.tenant_slots.clone().acquire_owned().await.ok()?;
            let global = self.shared.slots.clone().acquire_owned().await.ok()?;
            Some((tenant, global))
        };
        let _slots = tokio::select! {
            s = slots => s?,
            _ = self.cancel.cancelled() => return None,
        };
        let dc = DrainConfig { leased: self.fence.is_some(), ..DrainConfig::default() };
        let report = match crate::ops::outbox::drain_with(&self.shared.plugin, &self.cfg, store, &self.queue, now, &dc).await {
            Ok(r) => r,
            Err(e) => return Some(Err(e)),
        };
        for id in &report.recovered {
            warn!(id = %id, "a message left in flight by a sender that stopped is held for the admin");
        }
        for r in &report.rows {
            info!(id = %r.id, message_id = %r.message_id, state = %r.state, reply = ?r.last_reply, "outbox message sent");
        }
        if !report.rows.is_empty() || !report.recovered.is_empty() {
            // Their outbox.state-changed events are committed: webhooks and SSE look now.
            let _ = self.shared.events_written.send(self.cfg.tenant.clone());
        }
        let limit = dc.batch_max.clamp(1, self.cfg.limits.max_batch_messages.max(1) as usize);
        Some(Ok(report.rows.len() >= limit))
    }

    fn any_in_flight(&self, store: &Store) -> bool {
        store.count(&self.cfg.tenant, &self.queue, OutboxState::InFlight).is_ok_and(|c| c.rows > 0)
    }

    /// How long until the queue's earliest queued row is due (at most `MAX_IDLE`).
    fn until_next_due(&self, store: &Store) -> Duration {
        let now = crate::driver::now_ms() as i64;
        let next = store.count(&self.cfg.tenant, &self.queue, OutboxState::Queued).ok().and_then(|c| c.earliest_next_attempt_at_ms);
        match next {
            Some(at) => Duration::from_millis(u64::try_from(at.saturating_sub(now)).unwrap_or(0)).min(MAX_IDLE),
            None => MAX_IDLE,
        }
    }

    /// The queue's depth by state and its oldest queued row, for `/metrics`.
    fn update_metrics(&self, store: &Store) {
        let mut oldest = None;
        for state in [OutboxState::Queued, OutboxState::InFlight, OutboxState::Held, OutboxState::Failed] {
            let Ok(c) = store.count(&self.cfg.tenant, &self.queue, state) else { return };
            if state == OutboxState::Queued {
                oldest = c.oldest_created_at_ms;
            }
            self.shared.metrics.set_outbox_depth(&self.cfg.tenant, &self.queue, state.as_str(), i64::try_from(c.rows).unwrap_or(i64::MAX));
        }
        self.shared.metrics.set_outbox_oldest(&self.cfg.tenant, &self.queue, oldest);
    }
}

/// The outbox routes, merged into `api::router`.
pub fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/v1/tenants/{t}/queues/{q}/outbox", post(enqueue))
        .route("/v1/tenants/{t}/outbox", get(list))
        .route("/v1/tenants/{t}/outbox/{id}", get(one))
        .route("/v1/tenants/{t}/outbox/{id}/{action}", post(decide))
}

/// What `POST .../queues/{q}/outbox` takes: a new message (`to`, `subject`, `text`) or a reply
/// to a stored message (`reply_to_message`, `text`, optional `html`, `force`). The From is
/// the queue's (or the reply plan's), as for `mailplug enqueue`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnqueueBody {
    #[serde(default)]
    to: Vec<String>,
    subject: Option<String>,
    text: String,
    reply_to_message: Option<String>,
    html: Option<String>,
    #[serde(default)]
    force: bool,
    max_age_secs: Option<u64>,
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, msg)
}

async fn enqueue(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Path((t, q)): Path<(String, String)>,
    body: Result<Json<EnqueueBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let state = tenant(&s, &headers, &t)?;
    let Json(req) = body.map_err(|e| {
        ApiError::new(
            e.status(),
            format!("the body must be JSON {{\"to\": [...], \"subject\": ..., \"text\": ...}} or {{\"reply_to_message\": ..., \"text\": ...}}: {}", e.body_text()),
        )
    })?;
    let cfg = state.config.clone();
    if cfg.queue(&q).is_none() {
        return Err(ApiError::new(StatusCode::NOT_FOUND, format!("tenant \"{t}\" has no queue named \"{q}\"")));
    }
    let what = match req.reply_to_message {
        Some(message) => {
            if !req.to.is_empty() || req.subject.is_some() {
                return Err(bad("a reply takes its recipients and subject from the message it answers: give either reply_to_message or to/subject"));
            }
            Compose::Reply { message, reply: Reply { text_body: req.text, html_body: req.html, force: req.force } }
        }
        None => {
            if req.to.is_empty() {
                return Err(bad("give at least one recipient in \"to\" (or \"reply_to_message\")"));
            }
            if req.html.is_some() || req.force {
                return Err(bad("\"html\" and \"force\" are for replies (with \"reply_to_message\")"));
            }
            Compose::Draft(Outgoing { to: req.to, subject: req.subject.unwrap_or_default(), text_body: req.text })
        }
    };
    if s.root.is_cancelled() {
        return Err(ApiError::stopping());
    }
    let max_age = req.max_age_secs.map(Duration::from_secs).unwrap_or(DEFAULT_MAX_AGE);
    let queue = q.clone();
    let enqueued = s
        .run_local(move |shared| {
            Box::pin(async move {
                let store = shared.store.open()?;
                crate::ops::outbox::enqueue(&shared.plugin, &cfg, &queue, &store, &what, max_age).await
            })
        })
        .await
        .map_err(|_| ApiError::stopping())?;
    let e = match enqueued {
        Ok(e) => e,
        Err(e) => {
            let (en, de) = s.explain(&state.config, &e).await;
            let mut err = ApiError::host(e);
            (err.en, err.de) = (en, de);
            return Err(err);
        }
    };
    // Committed: the queue's actor sends it now; its event goes out now.
    s.outbox.wake(&t, &q);
    let _ = s.events_written.send(t.clone());
    let mut body = e.row.to_json();
    if let Some(plan) = &e.plan {
        let warnings: Vec<_> = plan.warnings.iter().map(|w| json!({"en": w.en, "de": w.de})).collect();
        body["customer_sees"] = json!({"en": plan.customer_sees.en, "de": plan.customer_sees.de});
        body["warnings"] = json!(warnings);
    }
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

#[derive(Deserialize)]
struct ListQuery {
    state: Option<String>,
    queue: Option<String>,
    limit: Option<u32>,
}

async fn list(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(t): Path<String>,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    tenant(&s, &headers, &t)?;
    let state = match query.state.as_deref() {
        None | Some("") => None,
        Some(x) => Some(OutboxState::parse(x).ok_or_else(|| {
            bad(format!("unknown state \"{x}\": one of queued, in-flight, delivered, failed, held, cancelled"))
        })?),
    };
    let limit = query.limit.unwrap_or(100).clamp(1, super::api::MAX_LIMIT) as usize;
    let rows = s.read_store(move |db| db.list(&t, query.queue.as_deref(), state, limit)).await.map_err(ApiError::host)?;
    Ok(Json(json!({"outbox": rows.iter().map(OutboxRow::to_json).collect::<Vec<_>>()})))
}

async fn one(State(s): State<Arc<Shared>>, headers: HeaderMap, Path((t, id)): Path<(String, String)>) -> Result<Json<Value>, ApiError> {
    tenant(&s, &headers, &t)?;
    let t2 = t.clone();
    let id2 = id.clone();
    match s.read_store(move |db| db.get(&t2, &id2, false)).await.map_err(ApiError::host)? {
        Some(r) => Ok(Json(r.to_json())),
        None => Err(ApiError::new(StatusCode::NOT_FOUND, format!("tenant \"{t}\" has no outbox message \"{id}\""))),
    }
}

/// `resend` (held or failed -> queued, same bytes and Message-ID), `mark-delivered` (held ->
/// delivered), `cancel` (queued, held or failed -> cancelled).
async fn decide(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Path((t, id, action)): Path<(String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    tenant(&s, &headers, &t)?;
    if !matches!(action.as_str(), "resend" | "mark-delivered" | "cancel") {
        return Err(ApiError::new(StatusCode::NOT_FOUND, format!("no outbox action \"{action}\": resend, mark-delivered or cancel")));
    }
    if s.root.is_cancelled() {
        return Err(ApiError::stopping());
    }
    let (t2, act) = (t.clone(), action.clone());
    let row = s
        .read_store(move |db| {
            let now = crate::driver::now_ms() as i64;
            match act.as_str() {
                "resend" => db.resend(&t2, &id, now),
                "mark-delivered" => db.mark_delivered(&t2, &id, now),
                _ => db.cancel(&t2, &id, now),
            }
        })
        .await
        .map_err(ApiError::host)?;
    if action == "resend" {
        s.outbox.wake(&t, &row.queue);
    }
    let _ = s.events_written.send(t.clone());
    Ok(Json(row.to_json()))
}
