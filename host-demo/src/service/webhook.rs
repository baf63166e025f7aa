//! The webhook deliverer of `mailplug serve`: posts each tenant's events to the tenant's
//! `[webhook]` URL, signed, at least once, in event-id order (docs/WEBHOOKS.md).
//!
//! For every tenant with a webhook, one task reads the tenant's undelivered events in id
//! order from an [`EventSource`] (the service's `events` table) and `POST`s each as JSON
//! `{id, tenant, kind, created_at, data}` with `Mailplug-Event-Id`, `Mailplug-Timestamp` and
//! `Mailplug-Signature: v1=<hex HMAC-SHA256 over "<timestamp>.<body>">` under the tenant's
//! secret. A 2xx answer marks the event delivered. Anything else (another status, a refused
//! or cut connection, no answer within the timeouts) marks it failed with the time of the next
//! attempt (exponential backoff); an event that still fails past its maximum age (24 h) is
//! marked dead and the next one goes. A failed event blocks the tenant's later events until it
//! is delivered or dead: receivers see each tenant's events in order (what ticket systems
//! expect). Other tenants are not held up.
//!
//! Nothing secret reaches an error or a log line: the URL is shown without its query, the
//! receiver's answer body is never shown, and the secret only enters the HMAC key.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ring::hmac;
use serde_json::json;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::config::{webhook_url, TenantConfig, WebhookConfig, WebhookUrlError};
use crate::driver::now_ms;
use crate::error::HostError;
use crate::http;
use crate::store::postgres::Fence;

/// One event as the service stored it.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Sortable and unique (ULID): the order of delivery and the receiver's dedup key.
    pub id: String,
    pub tenant: String,
    /// `message.stored`, `outbox.state-changed`, `mailbox.state-changed`.
    pub kind: String,
    /// What the event describes; posted as `data`.
    pub payload: serde_json::Value,
    pub created_at_ms: u64,
    /// Failed deliveries so far.
    pub attempts: u32,
}

/// Where the deliverer reads events and records their outcomes (the service's `events`
/// table). Calls are short; the deliverer makes them from its tasks.
pub trait EventSource: Send + Sync {
    /// Up to `limit` events of `tenant` that are neither delivered nor dead, oldest id first,
    /// whatever their next attempt time (the deliverer keeps the order and the waiting).
    fn next_undelivered(&self, tenant: &str, limit: usize) -> Result<Vec<Event>, HostError>;
    /// The receiver answered 2xx: never posted again.
    fn mark_delivered(&self, id: &str) -> Result<(), HostError>;
    /// The attempt failed: `attempts` + 1, and the next attempt is due at `next_attempt_at_ms`.
    fn mark_failed(&self, id: &str, next_attempt_at_ms: u64) -> Result<(), HostError>;
    /// Failed past its maximum age: never posted again (the API and metrics show it).
    fn mark_dead(&self, id: &str) -> Result<(), HostError>;
    /// The source a tenant's task uses for `target`, when it differs from this one: on
    /// PostgreSQL with leases, a view whose marks carry the target's lease (`Target::fence`)
    /// and are refused with `HostError::LeaseLost` once another node took the tenant's
    /// webhook over. None: this source.
    fn for_target(&self, _target: &Target) -> Option<Arc<dyn EventSource>> {
        None
    }
}

/// How deliveries are timed. `Default` is the service's; tests shorten it.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Connecting (TCP and TLS) to the receiver.
    pub connect_timeout: Duration,
    /// The longest answer body read (and thrown away); a longer one ends the connection.
    pub max_response_bytes: usize,
    /// The wait after the first failure; doubled after each further one.
    pub backoff_first: Duration,
    /// The longest wait between two attempts.
    pub backoff_max: Duration,
    /// An event that still fails this long after it was created is marked dead.
    pub max_age: Duration,
    /// Events read from the source at a time.
    pub batch: usize,
    /// How often a tenant's task looks for new events when nobody wakes it (the service
    /// wakes it whenever events are committed: `Shared::events_written`).
    pub poll_interval: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            connect_timeout: Duration::from_secs(5),
            max_response_bytes: 64 * 1024,
            backoff_first: Duration::from_secs(10),
            backoff_max: Duration::from_secs(30 * 60),
            max_age: Duration::from_secs(24 * 60 * 60),
            batch: 100,
            poll_interval: Duration::from_secs(2),
        }
    }
}

impl Policy {
    /// The wait before the next attempt after `failures` failed ones (1, 2, ...).
    pub fn backoff(&self, failures: u32) -> Duration {
        let factor = 1u32.checked_shl(failures.saturating_sub(1).min(31)).unwrap_or(u32::MAX);
        self.backoff_first.saturating_mul(factor).min(self.backoff_max)
    }
}

/// A tenant's webhook as the deliverer needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub tenant: String,
    pub webhook: WebhookConfig,
    /// The tenant's extra CA certificates (PEM), trusted besides the system roots.
    pub extra_ca: Option<PathBuf>,
    /// With leases (several nodes): the `webhook:<tenant>` lease this node delivers under.
    /// A new lease is a new target, so the tenant's task restarts with it.
    pub fence: Option<Fence>,
}

impl Target {
    /// The tenant's webhook, when its configuration has one.
    pub fn of(cfg: &TenantConfig) -> Option<Target> {
        cfg.webhook.as_ref().map(|w| Target { tenant: cfg.tenant.clone(), webhook: w.clone(), extra_ca: cfg.extra_ca_file.clone(), fence: None })
    }
}

/// `v1=<hex HMAC-SHA256 of "<timestamp>.<body>">` under `secret`: the `Mailplug-Signature`.
pub fn sign(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(timestamp.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    let tag = ctx.sign();
    let mut out = String::with_capacity(3 + 64);
    out.push_str("v1=");
    for b in tag.as_ref() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// The receiver's check (docs/WEBHOOKS.md): one of the `v1=` signatures in `signature` (the
/// header may carry several, comma-separated, while a secret is rotated) is the HMAC of
/// "<timestamp>.<body>" under `secret`, compared in constant time, and `timestamp` is within
/// `tolerance` of `now` (Unix seconds), so a captured request cannot be replayed later.
pub fn verify(secret: &[u8], timestamp: &str, body: &[u8], signature: &str, now: u64, tolerance: Duration) -> bool {
    let Ok(ts) = timestamp.trim().parse::<u64>() else { return false };
    if now.abs_diff(ts) > tolerance.as_secs() {
        return false;
    }
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut signed = format!("{ts}.").into_bytes();
    signed.extend_from_slice(body);
    signature.split(',').filter_map(|s| s.trim().strip_prefix("v1=")).filter_map(unhex).any(|tag| hmac::verify(&key, &signed, &tag).is_ok())
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// The JSON body posted for `e`.
pub fn body(e: &Event) -> Vec<u8> {
    let created = UNIX_EPOCH + Duration::from_millis(e.created_at_ms);
    let v = json!({
        "id": e.id,
        "tenant": e.tenant,
        "kind": e.kind,
        "created_at": humantime::format_rfc3339_millis(created).to_string(),
        "data": e.payload,
    });
    serde_json::to_vec(&v).unwrap_or_default()
}

/// What one pass of [`Deliverer::deliver_once`] did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Report {
    /// Events delivered, in order.
    pub delivered: Vec<String>,
    /// Events marked dead.
    pub dead: Vec<String>,
    /// The event that failed and now blocks the tenant's later ones, with why (no secret,
    /// no URL query) and when it is due again.
    pub failed: Option<Failure>,
    /// The source had more events than one batch: call again at once.
    pub more: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub id: String,
    pub error: String,
    pub retry_at_ms: u64,
}

/// Delivers one tenant's events.
pub struct Deliverer {
    target: Target,
    policy: Policy,
    client: reqwest::Client,
    /// The event that failed last and when it may be tried again (kept in memory; after a
    /// restart the first attempt is at once).
    blocked: Option<(String, u64)>,
}

impl Deliverer {
    /// A deliverer for `target`; refuses a URL that is not https (plain http only to loopback,
    /// or with `insecure_plaintext`), whoever built the target.
    pub fn new(target: Target, policy: Policy) -> Result<Deliverer, HostError> {
        let w = &target.webhook;
        let bad = |m: &str| HostError::NotAllowed(format!("tenant {}: webhook {}: {m}", target.tenant, http::redacted(&w.url)));
        match webhook_url(&w.url, w.insecure_plaintext) {
            Ok(_) => {}
            Err(WebhookUrlError::Invalid) => return Err(bad("not a valid URL")),
            Err(WebhookUrlError::NotHttp | WebhookUrlError::Plaintext) => {
                return Err(bad("must be an https URL (plain http only to a loopback address, or with `insecure_plaintext`)"))
            }
            Err(WebhookUrlError::UserInfo) => return Err(bad("must not carry a user name or password")),
        }
        let tls = crate::net::tls_config(target.extra_ca.as_deref())?;
        let client = http::client(&tls, policy.connect_timeout, target.webhook.timeout, None)?;
        Ok(Deliverer { target, policy, client, blocked: None })
    }

    pub fn tenant(&self) -> &str {
        &self.target.tenant
    }

    /// When the blocking event may be tried again (None: nothing blocks).
    pub fn blocked_until_ms(&self) -> Option<u64> {
        self.blocked.as_ref().map(|(_, at)| *at)
    }

    /// Posts the tenant's due events once, in order, until one fails or the batch ends.
    pub async fn deliver_once(&mut self, source: &dyn EventSource) -> Result<Report, HostError> {
        self.pass(source, None).await
    }

    async fn pass(&mut self, source: &dyn EventSource, cancel: Option<&CancellationToken>) -> Result<Report, HostError> {
        let mut report = Report::default();
        let events = source.next_undelivered(&self.target.tenant, self.policy.batch.max(1))?;
        report.more = events.len() >= self.policy.batch.max(1);
        for e in events {
            if cancel.is_some_and(|c| c.is_cancelled()) {
                report.more = true;
                return Ok(report);
            }
            if let Some((id, at)) = &self.blocked {
                if *id == e.id && now_ms() < *at {
                    report.more = false;
                    report.failed = Some(Failure { id: id.clone(), error: "waiting for the next attempt".into(), retry_at_ms: *at });
                    return Ok(report);
                }
            }
            match self.post(&e).await {
                Ok(()) => {
                    source.mark_delivered(&e.id)?;
                    self.blocked = None;
                    tracing::debug!(tenant = %e.tenant, event = %e.id, kind = %e.kind, "webhook delivered");
                    report.delivered.push(e.id);
                }
                Err(why) => {
                    let now = now_ms();
                    let failures = e.attempts.saturating_add(1);
                    let retry_at = now.saturating_add(self.policy.backoff(failures).as_millis() as u64);
                    let deadline = e.created_at_ms.saturating_add(self.policy.max_age.as_millis() as u64);
                    if retry_at > deadline {
                        source.mark_dead(&e.id)?;
                        self.blocked = None;
                        tracing::warn!(tenant = %e.tenant, event = %e.id, kind = %e.kind, attempts = failures, error = %why,
                            "webhook delivery failed past the maximum age; the event is dead and the next one goes");
                        report.dead.push(e.id);
                        continue;
                    }
                    source.mark_failed(&e.id, retry_at)?;
                    tracing::warn!(tenant = %e.tenant, event = %e.id, kind = %e.kind, attempts = failures, error = %why,
                        retry_in_ms = retry_at.saturating_sub(now), "webhook delivery failed; retrying later (later events wait)");
                    self.blocked = Some((e.id.clone(), retry_at));
                    report.more = false;
                    report.failed = Some(Failure { id: e.id, error: why, retry_at_ms: retry_at });
                    return Ok(report);
                }
            }
        }
        Ok(report)
    }

    /// One POST; Err says why it did not count as delivered.
    async fn post(&self, e: &Event) -> Result<(), String> {
        let body = body(e);
        let timestamp = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let signature = sign(self.target.webhook.secret.expose().as_bytes(), timestamp, &body);
        let url = &self.target.webhook.url;
        let where_ = http::redacted(url);
        let send = self
            .client
            .post(url.as_str())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(reqwest::header::USER_AGENT, concat!("mailplug-webhook/", env!("CARGO_PKG_VERSION")))
            .header("Mailplug-Event-Id", e.id.as_str())
            .header("Mailplug-Timestamp", timestamp.to_string())
            .header("Mailplug-Signature", signature)
            .body(body)
            .send();
        let timeout = self.target.webhook.timeout;
        let secs = timeout.as_secs();
        let attempt = async {
            let mut resp = send.await.map_err(|err| describe(&err, secs))?;
            let status = resp.status();
            // Drained (bounded) so the connection can carry the next event; never shown.
            let _ = http::read_body(&mut resp, self.policy.max_response_bytes).await;
            if status.is_success() {
                Ok(())
            } else {
                Err(format!("the receiver answered HTTP {}", status.as_u16()))
            }
        };
        match tokio::time::timeout(timeout + Duration::from_millis(200), attempt).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(why)) => Err(format!("{where_}: {why}")),
            Err(_) => Err(format!("{where_}: no answer within {secs} s")),
        }
    }
}

/// A failed request in words, without the URL (reqwest would print it with its query).
fn describe(e: &reqwest::Error, secs: u64) -> String {
    if e.is_timeout() {
        return format!("no answer within {secs} s");
    }
    if let Some(tls) = http::find_source::<rustls::Error>(e) {
        return format!("TLS failed: {}", http::describe_tls(tls));
    }
    if e.is_connect() {
        return match http::find_source::<std::io::Error>(e) {
            Some(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
            Some(io) => format!("cannot connect: {io}"),
            None => "cannot connect".into(),
        };
    }
    format!("the request failed: {}", http::cause(e))
}

/// Runs the deliverer for every tenant in `tenants` until `cancel`, with the default policy.
/// See [`run_with`].
pub async fn run(source: Arc<dyn EventSource>, tenants: watch::Receiver<Vec<Target>>, cancel: CancellationToken) {
    run_with(source, tenants, cancel, Policy::default(), Arc::new(Notify::new())).await
}

/// Runs one delivery task per tenant in `tenants` (tenants added, changed or removed in the
/// watched list are started, restarted or stopped; a changed tenant's old task finishes its
/// request in flight before the new one starts). `wake.notify_waiters()` after appending
/// events makes the tasks look at once instead of at their next poll. On `cancel` every task
/// stops between requests and this returns.
pub async fn run_with(
    source: Arc<dyn EventSource>,
    mut tenants: watch::Receiver<Vec<Target>>,
    cancel: CancellationToken,
    policy: Policy,
    wake: Arc<Notify>,
) {
    let mut running: HashMap<String, (Target, CancellationToken, tokio::task::JoinHandle<()>)> = HashMap::new();
    loop {
        let wanted: Vec<Target> = tenants.borrow_and_update().clone();
        running.retain(|tenant, (_, token, _)| {
            let keep = wanted.iter().any(|t| &t.tenant == tenant);
            if !keep {
                token.cancel();
            }
            keep
        });
        for t in wanted {
            if running.get(&t.tenant).is_some_and(|(old, _, _)| *old == t) {
                continue;
            }
            let before = running.remove(&t.tenant).map(|(_, token, handle)| {
                token.cancel();
                handle
            });
            let token = cancel.child_token();
            let task = tenant_loop(source.clone(), t.clone(), policy.clone(), wake.clone(), token.clone());
            let handle = tokio::spawn(async move {
                if let Some(h) = before {
                    let _ = h.await;
                }
                task.await
            });
            running.insert(t.tenant.clone(), (t, token, handle));
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            changed = tenants.changed() => {
                if changed.is_err() {
                    // Nobody updates the list any more: run it until cancelled.
                    cancel.cancelled().await;
                    break;
                }
            }
        }
    }
    for (_, (_, token, handle)) in running {
        token.cancel();
        let _ = handle.await;
    }
}

async fn tenant_loop(source: Arc<dyn EventSource>, target: Target, policy: Policy, wake: Arc<Notify>, cancel: CancellationToken) {
    let tenant = target.tenant.clone();
    let source = source.for_target(&target).unwrap_or(source);
    let mut d = match Deliverer::new(target, policy.clone()) {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(tenant = %tenant, error = %e, "webhook deliverer cannot start; fix the tenant's configuration");
            return;
        }
    };
    while !cancel.is_cancelled() {
        let notified = wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let wait = match d.pass(&*source, Some(&cancel)).await {
            Ok(r) if r.more => Duration::ZERO,
            Ok(r) => match r.failed {
                Some(f) => Duration::from_millis(f.retry_at_ms.saturating_sub(now_ms())).min(policy.backoff_max),
                None => policy.poll_interval,
            },
            Err(e @ HostError::LeaseLost { .. }) => {
                // Another node delivers the tenant's events now; what this node posted last may
                // reach the receiver twice (it dedups by the event id).
                tracing::warn!(tenant = %tenant, error = %e, "the tenant's webhook lease was lost; this node stops delivering its events");
                break;
            }
            Err(e) => {
                tracing::warn!(tenant = %tenant, error = %e, "reading or marking webhook events failed");
                policy.poll_interval
            }
        };
        if wait.is_zero() {
            continue;
        }
        // New events do not jump a blocked one: only its due time (or cancel) ends that wait.
        let blocked = d.blocked_until_ms().is_some();
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = &mut notified, if !blocked => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// An [`EventSource`] in memory, for tests and tools.
#[derive(Default)]
pub struct MemoryEvents {
    inner: Mutex<Vec<Stored>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventState {
    Pending,
    Delivered,
    Dead,
}

struct Stored {
    event: Event,
    state: EventState,
    next_attempt_at_ms: u64,
    delivered_marks: u32,
}

impl MemoryEvents {
    pub fn push(&self, event: Event) {
        if let Ok(mut v) = self.inner.lock() {
            v.push(Stored { event, state: EventState::Pending, next_attempt_at_ms: 0, delivered_marks: 0 });
            v.sort_by(|a, b| a.event.id.cmp(&b.event.id));
        }
    }

    /// An event's state, failed attempts, next attempt time and how often it was marked
    /// delivered.
    pub fn status(&self, id: &str) -> Option<(EventState, u32, u64, u32)> {
        let v = self.inner.lock().ok()?;
        v.iter().find(|s| s.event.id == id).map(|s| (s.state, s.event.attempts, s.next_attempt_at_ms, s.delivered_marks))
    }

    fn with(&self, id: &str, f: impl FnOnce(&mut Stored)) -> Result<(), HostError> {
        let mut v = self.inner.lock().map_err(|_| HostError::Storage("the event list is poisoned".into()))?;
        let s = v.iter_mut().find(|s| s.event.id == id).ok_or_else(|| HostError::NotFound(format!("no event {id}")))?;
        f(s);
        Ok(())
    }
}

impl EventSource for MemoryEvents {
    fn next_undelivered(&self, tenant: &str, limit: usize) -> Result<Vec<Event>, HostError> {
        let v = self.inner.lock().map_err(|_| HostError::Storage("the event list is poisoned".into()))?;
        Ok(v.iter().filter(|s| s.event.tenant == tenant && s.state == EventState::Pending).take(limit).map(|s| s.event.clone()).collect())
    }
    fn mark_delivered(&self, id: &str) -> Result<(), HostError> {
        self.with(id, |s| {
            s.state = EventState::Delivered;
            s.delivered_marks += 1;
        })
    }
    fn mark_failed(&self, id: &str, next_attempt_at_ms: u64) -> Result<(), HostError> {
        self.with(id, |s| {
            s.event.attempts += 1;
            s.next_attempt_at_ms = next_attempt_at_ms;
        })
    }
    fn mark_dead(&self, id: &str) -> Result<(), HostError> {
        self.with(id, |s| s.state = EventState::Dead)
    }
}

#[cfg(test)]
mod tests;
