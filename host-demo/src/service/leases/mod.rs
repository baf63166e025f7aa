//! Leases in `mailplug serve` on PostgreSQL (docs/SCALING.md): several nodes share the tenants'
//! mailboxes, queues and webhooks, and each is worked on by the one node holding its lease.
//!
//! - [`LeaseNode`] is what this node holds: each lease with its fencing token, the order it
//!   was taken in, a `CancellationToken` its actors run under, and until when it surely holds
//!   by the local monotonic clock (the start of the statement that took or renewed it + TTL).
//! - The renewer (`renew`) runs on the runtime's worker threads, away from guest work: every
//!   TTL / 3 it renews all held leases in one statement and the node's heartbeat `node:<id>`
//!   (which counts the live nodes). A lease the database says is lost, or one not renewed in
//!   time by the local clock (the database unreachable, the process paused), is dropped at
//!   once: its actors are cancelled.
//! - The claimer (`claim`) runs on the actors' thread: every TTL / 3 (with jitter) it plans
//!   with [`plan`] from the board's tenants, gives up the surplus after its actors finished,
//!   takes free leases and starts (or restarts, when the tenant's file changed) the actor of
//!   each held lease with the store's view fenced by that lease.
//! - A fenced write refused (`HostError::LeaseLost`) anywhere drops that lease at once
//!   (`LeaseNode::lost_by`). On SIGTERM every lease and the heartbeat are released after the
//!   actors stopped, so other nodes take over without waiting for the TTL.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::metrics::{LeaseLabels, Metrics};
use crate::error::HostError;
use crate::store::postgres::{Fence, Lease, Leases, PgStore};

pub mod claim;
pub mod plan;
pub mod renew;

/// The default lease TTL (`--lease-ttl`).
pub const DEFAULT_TTL: Duration = Duration::from_secs(30);

/// What a lease is for, from its resource name.
pub fn kind(resource: &str) -> &'static str {
    match resource.split_once(':').map(|(k, _)| k) {
        Some("mailbox") => "mailbox",
        Some("queue") => "queue",
        Some("webhook") => "webhook",
        _ => "other",
    }
}

/// The default node id: host name, process id and start time (Unix seconds), unique per
/// process start.
pub fn default_node_id() -> String {
    let host = hostname().unwrap_or_else(|| "node".into());
    let started = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    format!("{host}-{}-{started}", std::process::id())
}

fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]).trim().to_string();
    (!name.is_empty()).then_some(name)
}

/// The margin before a lease's local deadline at which the node gives it up: TTL / 5, at most
/// 5 s.
pub fn margin(ttl: Duration) -> Duration {
    (ttl / 5).min(Duration::from_secs(5))
}

/// One lease this node holds.
struct Held {
    lease: Lease,
    /// Acquisition order.
    seq: u64,
    /// Cancelled when the lease is lost or given up.
    cancel: CancellationToken,
    /// Until when it surely holds (local monotonic clock).
    valid_until: Instant,
    /// Being given up: its actors are finishing.
    releasing: bool,
}

#[derive(Default)]
struct Inner {
    held: BTreeMap<String, Held>,
    next_seq: u64,
    live_nodes: usize,
    heartbeat: Option<Lease>,
}

/// This node's leases.
pub struct LeaseNode {
    pub id: String,
    pub ttl: Duration,
    pub store: PgStore,
    inner: Mutex<Inner>,
    /// Wakes the claimer: a tenant changed, or a lease was lost.
    pub wake: Notify,
    /// The parent of every lease's token (the service's root).
    root: CancellationToken,
    leases_held: prometheus_client::metrics::family::Family<LeaseLabels, prometheus_client::metrics::gauge::Gauge>,
    leases_acquired: prometheus_client::metrics::family::Family<LeaseLabels, prometheus_client::metrics::counter::Counter>,
    leases_lost: prometheus_client::metrics::family::Family<LeaseLabels, prometheus_client::metrics::counter::Counter>,
    live_nodes_gauge: prometheus_client::metrics::gauge::Gauge,
}

impl LeaseNode {
    pub fn new(store: PgStore, id: String, ttl: Duration, root: CancellationToken, metrics: &Metrics) -> LeaseNode {
        LeaseNode {
            id,
            ttl,
            store,
            inner: Mutex::new(Inner { live_nodes: 1, ..Inner::default() }),
            wake: Notify::new(),
            root,
            leases_held: metrics.leases_held.clone(),
            leases_acquired: metrics.leases_acquired.clone(),
            leases_lost: metrics.leases_lost.clone(),
            live_nodes_gauge: metrics.live_nodes.clone(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn count_held(&self, inner: &Inner) {
        for k in ["mailbox", "queue", "webhook"] {
            let n = inner.held.keys().filter(|r| kind(r) == k).count();
            self.leases_held.get_or_create(&LeaseLabels { kind: k.into() }).set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// Live nodes as last counted (at least 1: this one).
    pub fn live_nodes(&self) -> usize {
        self.lock().live_nodes.max(1)
    }

    /// The held resources that are not being given up, oldest acquisition first.
    pub fn held_in_order(&self) -> Vec<String> {
        let inner = self.lock();
        let mut v: Vec<(&String, u64)> = inner.held.iter().filter(|(_, h)| !h.releasing).map(|(r, h)| (r, h.seq)).collect();
        v.sort_by_key(|(_, s)| *s);
        v.into_iter().map(|(r, _)| r.clone()).collect()
    }

    /// Whether this node holds `resource` (and is not giving it up).
    pub fn holds(&self, resource: &str) -> bool {
        self.lock().held.get(resource).is_some_and(|h| !h.releasing)
    }

    /// The fence and token of a held lease: what its actors write under and stop with.
    pub fn lease_of(&self, resource: &str) -> Option<(Fence, CancellationToken)> {
        self.lock().held.get(resource).filter(|h| !h.releasing).map(|h| (h.lease.fence(), h.cancel.clone()))
    }

    /// Records leases just taken by a statement that started at `started`.
    pub fn add(&self, leases: Vec<Lease>, started: Instant) {
        let mut inner = self.lock();
        for lease in leases {
            inner.next_seq += 1;
            let seq = inner.next_seq;
            self.leases_acquired.get_or_create(&LeaseLabels { kind: kind(&lease.resource).into() }).inc();
            tracing::info!(resource = %lease.resource, token = lease.token, "lease acquired");
            let held = Held { lease, seq, cancel: self.root.child_token(), valid_until: started + self.ttl, releasing: false };
            if let Some(old) = inner.held.insert(held.lease.resource.clone(), held) {
                old.cancel.cancel();
            }
        }
        self.count_held(&inner);
    }

    /// Drops a lease this node no longer holds: its actors are cancelled at once.
    /// `token`: only when it is still that token's (a late report of an older lease does not
    /// drop a newer one). Returns whether it was held.
    pub fn lose(&self, resource: &str, token: Option<i64>, why: &str, holder: Option<&str>) -> bool {
        let mut inner = self.lock();
        let matches = inner.held.get(resource).is_some_and(|h| token.is_none_or(|t| t == h.lease.token));
        if !matches {
            return false;
        }
        let Some(h) = inner.held.remove(resource) else { return false };
        h.cancel.cancel();
        self.count_held(&inner);
        drop(inner);
        self.leases_lost.get_or_create(&LeaseLabels { kind: kind(resource).into() }).inc();
        warn!(resource = %resource, token = h.lease.token, holder = holder.unwrap_or("unknown"), why, "lease lost; its work stops on this node");
        self.wake.notify_one();
        true
    }

    /// When `e` is a refused fenced write (`LeaseLost`), drops that lease. Returns whether it
    /// was one.
    pub fn lost_by(&self, e: &HostError) -> bool {
        match e {
            HostError::LeaseLost { resource, token, holder } => {
                self.lose(resource, Some(*token), "a write under it was refused", holder.as_deref());
                true
            }
            _ => false,
        }
    }

    /// Starts giving a lease up: its actors are cancelled; it is still renewed until
    /// `released`. The lease, or None when not held.
    pub fn begin_release(&self, resource: &str) -> Option<Lease> {
        let mut inner = self.lock();
        let h = inner.held.get_mut(resource)?;
        h.releasing = true;
        h.cancel.cancel();
        Some(h.lease.clone())
    }

    /// Forgets a lease given up (after `release` in the store).
    pub fn released(&self, lease: &Lease) {
        let mut inner = self.lock();
        if inner.held.get(&lease.resource).is_some_and(|h| h.lease.token == lease.token) {
            inner.held.remove(&lease.resource);
        }
        self.count_held(&inner);
    }

    /// Drops every lease whose local deadline (minus the margin) has passed: the node cannot
    /// know it still holds them. Returns how many.
    pub fn expire_overdue(&self, now: Instant) -> usize {
        let overdue: Vec<(String, i64)> = {
            let inner = self.lock();
            let m = margin(self.ttl);
            inner.held.iter().filter(|(_, h)| now + m >= h.valid_until).map(|(r, h)| (r.clone(), h.lease.token)).collect()
        };
        for (r, token) in &overdue {
            self.lose(r, Some(*token), "not renewed in time (the database did not answer, or the process was paused)", None);
        }
        overdue.len()
    }

    /// The earliest local deadline (minus the margin) of a held lease.
    pub fn next_deadline(&self) -> Option<Instant> {
        let m = margin(self.ttl);
        self.lock().held.values().map(|h| h.valid_until.checked_sub(m).unwrap_or(h.valid_until)).min()
    }

    /// Every held lease (also those being given up), for the renewal.
    pub fn all_leases(&self) -> Vec<Lease> {
        self.lock().held.values().map(|h| h.lease.clone()).collect()
    }

    /// Applies a renewal that started at `started`.
    pub fn renewed(&self, renewal: crate::store::postgres::Renewal, started: Instant) {
        {
            let mut inner = self.lock();
            for l in renewal.renewed {
                if let Some(h) = inner.held.get_mut(&l.resource).filter(|h| h.lease.token == l.token) {
                    h.lease.expires_at_ms = l.expires_at_ms;
                    h.valid_until = started + self.ttl;
                }
            }
        }
        for (l, holder) in renewal.lost {
            self.lose(&l.resource, Some(l.token), "the renewal was refused", holder.as_deref());
        }
    }

    /// Records a heartbeat: the live nodes.
    pub fn beat(&self, hb: crate::store::postgres::Heartbeat) {
        let mut inner = self.lock();
        if inner.live_nodes != hb.live_nodes {
            tracing::info!(live_nodes = hb.live_nodes, "live nodes changed");
            self.wake.notify_one();
        }
        inner.live_nodes = hb.live_nodes;
        self.live_nodes_gauge.set(i64::try_from(hb.live_nodes).unwrap_or(i64::MAX));
        inner.heartbeat = Some(hb.lease);
    }

    /// For the API: names the node serving each of the tenant's mailboxes that this node does
    /// not serve, from the lease table (live leases only; left empty when nobody holds it or
    /// the table cannot be read).
    pub async fn fill_holders(&self, state: &mut crate::service::state::TenantState) {
        let (store, prefix) = (self.store.clone(), crate::store::postgres::lease::mailbox_resource(&state.tenant, ""));
        let leases = match tokio::task::spawn_blocking(move || store.list_leases(&prefix)).await {
            Ok(Ok(l)) => l,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "cannot list the mailbox leases for the API");
                return;
            }
            Err(_) => return,
        };
        for l in leases {
            let (Some(owner), true) = (l.owner, l.live) else { continue };
            if owner == self.id {
                continue;
            }
            let Some(name) = l.resource.strip_prefix(&format!("mailbox:{}/", state.tenant)) else { continue };
            if let Some(m) = state.mailboxes.get_mut(name).filter(|m| m.node.is_none()) {
                m.node = Some(owner);
            }
        }
    }

    /// At shutdown, after the actors stopped: gives every lease and the heartbeat up, so other
    /// nodes take over at once.
    pub async fn release_all(&self) {
        let (leases, hb): (Vec<Lease>, Option<Lease>) = {
            let mut inner = self.lock();
            let leases = std::mem::take(&mut inner.held).into_values().map(|h| h.lease).collect();
            (leases, inner.heartbeat.take())
        };
        let n = leases.len();
        let store = self.store.clone();
        let done = tokio::task::spawn_blocking(move || {
            let mut failed = 0;
            for l in leases.iter().chain(hb.iter()) {
                if store.release(l).is_err() {
                    failed += 1;
                }
            }
            failed
        })
        .await;
        match done {
            Ok(0) => tracing::info!(leases = n, "leases released"),
            Ok(failed) => warn!(failed, "some leases could not be released; they expire at their TTL"),
            Err(e) => warn!(error = %e, "releasing the leases failed; they expire at their TTL"),
        }
        let inner = self.lock();
        self.count_held(&inner);
    }
}
