//! The claimer: on the actors' thread, every TTL / 3 with jitter (and at once when a tenant
//! changed, the live nodes changed or a lease was lost), it
//!
//! 1. lists the work of every tenant on the board: `mailbox:<tenant>/<mailbox>`,
//!    `queue:<tenant>/<queue>`, and `webhook:<tenant>` for a tenant with a `[webhook]`;
//! 2. plans with [`super::plan`] (fair share over the live nodes);
//! 3. gives up the surplus: the lease's actor is cancelled (it finishes the commit it is in,
//!    an IDLE session logs out), then the lease is released so another node takes it at once;
//! 4. takes free leases (`acquire_free`: SKIP LOCKED, so racing nodes split them);
//! 5. runs the actor of each held lease with the store's view fenced by it (mailbox actor,
//!    queue sender, or the tenant's webhook deliverer), restarting it when the tenant's file
//!    changed; an actor whose lease is lost is cancelled by the lease's token.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use super::plan::{plan, View};
use super::LeaseNode;
use crate::config::TenantConfig;
use crate::service::scheduler::{jitter, random_u32, MailboxActor};
use crate::service::state::Phase;
use crate::service::webhook::Target;
use crate::service::Shared;
use crate::store::postgres::lease::{mailbox_resource, queue_resource, webhook_resource};
use crate::store::postgres::{Fence, Leases};

/// What a resource's lease is for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Work {
    Mailbox(String),
    Queue(String),
    Webhook,
}

/// A resource of a tenant on the board.
struct Item {
    tenant: String,
    work: Work,
    cfg: Arc<TenantConfig>,
}

/// Every tenant's resources, by name.
fn catalog(shared: &Shared) -> BTreeMap<String, Item> {
    shared.board.read(|b| {
        let mut all = BTreeMap::new();
        for t in b.tenants.values() {
            let cfg = t.config.clone();
            let item = |work| Item { tenant: cfg.tenant.clone(), work, cfg: cfg.clone() };
            for m in &cfg.mailboxes {
                all.insert(mailbox_resource(&cfg.tenant, &m.name), item(Work::Mailbox(m.name.clone())));
            }
            for q in &cfg.queues {
                all.insert(queue_resource(&cfg.tenant, &q.name), item(Work::Queue(q.name.clone())));
            }
            if cfg.webhook.is_some() {
                all.insert(webhook_resource(&cfg.tenant), item(Work::Webhook));
            }
        }
        all
    })
}

/// An actor running under a lease.
struct Running {
    cfg: Arc<TenantConfig>,
    token: CancellationToken,
    done: TaskTracker,
}

/// The claimer's state.
pub struct Claimer {
    shared: Arc<Shared>,
    node: Arc<LeaseNode>,
    running: HashMap<String, Running>,
    /// Each tenant's concurrency cap, shared by its actors on this node.
    slots: HashMap<String, Arc<Semaphore>>,
}

impl Claimer {
    pub fn new(shared: Arc<Shared>, node: Arc<LeaseNode>) -> Claimer {
        Claimer { shared, node, running: HashMap::new(), slots: HashMap::new() }
    }

    /// Runs claim rounds until the service stops; must run on the actors' thread.
    pub async fn run(mut self) {
        let every = self.node.ttl / 3;
        let stop = self.shared.root.clone();
        loop {
            if stop.is_cancelled() {
                break;
            }
            if self.shared.board.read(|b| b.loaded) {
                self.round().await;
            }
            let wait = jitter(every, random_u32());
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.node.wake.notified() => {}
                _ = stop.cancelled() => break,
            }
        }
    }

    /// One round: release the surplus, take the share, run the actors.
    pub async fn round(&mut self) {
        let cat = catalog(&self.shared);
        let resources: Vec<String> = cat.keys().cloned().collect();
        let held = self.node.held_in_order();
        let p = plan(View { resources: &resources, live_nodes: self.node.live_nodes(), held: &held });
        for r in &p.release {
            self.give_up(r, cat.contains_key(r));
        }
        if p.acquire > 0 && !self.shared.root.is_cancelled() {
            let (store, id, ttl, n) = (self.node.store.clone(), self.node.id.clone(), self.node.ttl, p.acquire);
            let candidates = p.candidates;
            let started = Instant::now();
            match tokio::task::spawn_blocking(move || store.acquire_free(&candidates, &id, ttl, n)).await {
                Ok(Ok(got)) => self.node.add(got, started),
                Ok(Err(e)) => warn!(error = %e, "cannot take leases; trying again at the next round"),
                Err(e) => warn!(error = %e, "taking leases failed"),
            }
        }
        // Actors whose lease is gone were cancelled with it.
        let node = self.node.clone();
        self.running.retain(|r, x| {
            let keep = node.holds(r) || !x.done.is_empty();
            if !keep {
                x.done.close();
            }
            keep
        });
        for (resource, item) in &cat {
            let Some((fence, lease_token)) = self.node.lease_of(resource) else { continue };
            if self.running.get(resource).is_some_and(|x| Arc::ptr_eq(&x.cfg, &item.cfg) && !x.token.is_cancelled()) {
                continue;
            }
            self.start(resource, item, fence, lease_token);
        }
    }

    /// Starts the actor of a held lease, after the previous one (of an older version of the
    /// tenant's file, or of an earlier lease) finished.
    fn start(&mut self, resource: &str, item: &Item, fence: Fence, lease_token: CancellationToken) {
        let before = self.running.remove(resource).map(|old| {
            old.token.cancel();
            old.done.close();
            old.done
        });
        let token = lease_token.child_token();
        let done = TaskTracker::new();
        let shared = self.shared.clone();
        let slots = self.slots.entry(item.tenant.clone()).or_insert_with(|| Arc::new(Semaphore::new(shared.options.max_per_tenant.max(1)))).clone();
        let (cfg, tenant, work, tok, node) = (item.cfg.clone(), item.tenant.clone(), item.work.clone(), token.clone(), self.node.clone());
        let res = resource.to_string();
        let task = async move {
            if let Some(b) = before {
                b.wait().await;
            }
            if tok.is_cancelled() {
                return;
            }
            match work {
                Work::Mailbox(mailbox) => {
                    shared.board.mailbox(&tenant, &mailbox, |m| {
                        m.node = Some(node.id.clone());
                        m.phase = Phase::Connecting;
                    });
                    let actor = MailboxActor {
                        shared: shared.clone(),
                        cfg,
                        mailbox: mailbox.clone(),
                        cancel: tok,
                        tenant_slots: slots,
                        fence: Some(fence),
                    };
                    actor.run().await;
                    if !node.holds(&res) {
                        shared.board.mailbox(&tenant, &mailbox, |m| {
                            m.node = None;
                            m.phase = Phase::Elsewhere;
                        });
                    }
                }
                Work::Queue(queue) => {
                    let actor = crate::service::outbox::QueueActor { shared, cfg, queue, cancel: tok, tenant_slots: slots, fence: Some(fence) };
                    actor.run().await;
                }
                Work::Webhook => {
                    let Some(target) = Target::of(&cfg) else { return };
                    let target = Target { fence: Some(fence.clone()), ..target };
                    info!(tenant = %tenant, "delivering the tenant's webhook events on this node");
                    crate::service::events::set_webhook(&shared, &tenant, Some(target));
                    tok.cancelled().await;
                    // Only this lease's target: a newer one may be set already.
                    shared.webhooks.send_if_modified(|list| {
                        let before = list.len();
                        list.retain(|t| !(t.tenant == tenant && t.fence.as_ref() == Some(&fence)));
                        list.len() != before
                    });
                }
            }
        };
        tokio::task::spawn_local(done.track_future(self.shared.all.track_future(task)));
        self.running.insert(resource.to_string(), Running { cfg: item.cfg.clone(), token, done });
    }

    /// Gives a lease up: its actor stops (finishing the commit it is in), then the lease is
    /// released (at most the grace period later: fencing refuses whatever it still tries).
    fn give_up(&mut self, resource: &str, still_exists: bool) {
        let Some(lease) = self.node.begin_release(resource) else { return };
        info!(
            resource = %resource,
            why = if still_exists { "this node holds more than its share" } else { "its tenant, mailbox or queue is gone" },
            "giving the lease up"
        );
        let done = self.running.remove(resource).map(|x| {
            x.done.close();
            x.done
        });
        let (node, grace) = (self.node.clone(), self.shared.options.shutdown_grace);
        tokio::task::spawn_local(async move {
            if let Some(d) = done {
                let _ = tokio::time::timeout(grace, d.wait()).await;
            }
            let (store, l) = (node.store.clone(), lease.clone());
            match tokio::task::spawn_blocking(move || store.release(&l)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => warn!(resource = %lease.resource, error = %e, "cannot release the lease; it expires at its TTL"),
                Err(e) => warn!(resource = %lease.resource, error = %e, "releasing the lease failed"),
            }
            node.released(&lease);
            node.wake.notify_one();
        });
    }
}

