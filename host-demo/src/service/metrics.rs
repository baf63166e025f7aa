//! Prometheus metrics (prometheus-client): counters the actors bump, and gauges filled from
//! the board when `/metrics` is scraped (mailbox states, tenants, process memory).

use std::sync::Mutex;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::state::{Board, Phase};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MailboxLabels {
    pub tenant: String,
    pub mailbox: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub tenant: String,
    pub mailbox: String,
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TrapLabels {
    pub tenant: String,
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub tenant: String,
    pub mailbox: String,
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantLabels {
    pub tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    pub tenant: String,
    pub queue: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueStateLabels {
    pub tenant: String,
    pub queue: String,
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LeaseLabels {
    /// "mailbox", "queue" or "webhook".
    pub kind: String,
}

/// Every metric the service exports.
pub struct Metrics {
    registry: Registry,
    pub fetched: Family<MailboxLabels, Counter>,
    pub bytes: Family<MailboxLabels, Counter>,
    pub errors: Family<ErrorLabels, Counter>,
    pub last_success: Family<MailboxLabels, Gauge>,
    pub traps: Family<TrapLabels, Counter>,
    /// IMAP connections idling now (the actors count them).
    pub idle_connections: Gauge,
    states: Family<StateLabels, Gauge>,
    tenants_loaded: Gauge,
    tenants_invalid: Gauge,
    rss: Gauge,
    /// Outbox rows by queue and state (queued, in-flight, held, failed), set by the queue actors.
    outbox_depth: Family<QueueStateLabels, Gauge>,
    /// The age of each queue's oldest queued row, computed at each scrape from `oldest_queued`.
    outbox_oldest_age: Family<QueueLabels, Gauge>,
    oldest_queued: Mutex<std::collections::HashMap<QueueLabels, i64>>,
    /// Webhook deliveries that failed (to be retried) and events given up on.
    pub webhook_failures: Family<TenantLabels, Counter>,
    pub webhook_dead: Family<TenantLabels, Counter>,
    /// With leases (PostgreSQL): what this node holds, took and lost, and the live nodes.
    pub leases_held: Family<LeaseLabels, Gauge>,
    pub leases_acquired: Family<LeaseLabels, Counter>,
    pub leases_lost: Family<LeaseLabels, Counter>,
    pub live_nodes: Gauge,
    /// Scrapes are serialised: the gauges are refilled from the board for each.
    scrape: Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let fetched = Family::<MailboxLabels, Counter>::default();
        let bytes = Family::<MailboxLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let last_success = Family::<MailboxLabels, Gauge>::default();
        let traps = Family::<TrapLabels, Counter>::default();
        let states = Family::<StateLabels, Gauge>::default();
        let idle_connections = Gauge::default();
        let (tenants_loaded, tenants_invalid, rss) = (Gauge::default(), Gauge::default(), Gauge::default());
        registry.register("mailplug_messages_fetched", "Messages newly stored, per mailbox", fetched.clone());
        registry.register("mailplug_bytes_fetched", "Bytes of messages newly stored, per mailbox", bytes.clone());
        registry.register("mailplug_errors", "Failed fetch runs by error kind", errors.clone());
        registry.register(
            "mailplug_last_success_timestamp_seconds",
            "When the mailbox's last fetch succeeded (Unix time)",
            last_success.clone(),
        );
        registry.register("mailplug_guest_traps", "Guest traps (memory limit, CPU budget, crash)", traps.clone());
        registry.register(
            "mailplug_idle_connections",
            "IMAP connections idling now (IMAP IDLE: no instance held)",
            idle_connections.clone(),
        );
        registry.register("mailplug_mailbox_state", "1 for the state each mailbox is in", states.clone());
        registry.register("mailplug_tenants_loaded", "Tenants running", tenants_loaded.clone());
        registry.register("mailplug_tenants_invalid", "Tenant files that do not validate", tenants_invalid.clone());
        registry.register("process_resident_memory_bytes", "Resident memory of the service", rss.clone());
        let outbox_depth = Family::<QueueStateLabels, Gauge>::default();
        let outbox_oldest_age = Family::<QueueLabels, Gauge>::default();
        let webhook_failures = Family::<TenantLabels, Counter>::default();
        let webhook_dead = Family::<TenantLabels, Counter>::default();
        registry.register("mailplug_outbox_depth", "Outbox messages by queue and state (queued, in-flight, held, failed)", outbox_depth.clone());
        registry.register(
            "mailplug_outbox_oldest_age_seconds",
            "How long the queue's oldest queued message has waited (0: none queued)",
            outbox_oldest_age.clone(),
        );
        registry.register("mailplug_webhook_failures", "Webhook deliveries that failed and will be retried", webhook_failures.clone());
        registry.register("mailplug_webhook_dead", "Webhook events given up on after their maximum age", webhook_dead.clone());
        let (leases_held, live_nodes) = (Family::<LeaseLabels, Gauge>::default(), Gauge::default());
        let (leases_acquired, leases_lost) = (Family::<LeaseLabels, Counter>::default(), Family::<LeaseLabels, Counter>::default());
        registry.register("mailplug_leases_held", "Leases this node holds now, by kind (mailbox, queue, webhook)", leases_held.clone());
        registry.register("mailplug_leases_acquired", "Leases this node took, by kind", leases_acquired.clone());
        registry.register(
            "mailplug_leases_lost",
            "Leases this node lost (not renewed in time, or another node holds them), by kind",
            leases_lost.clone(),
        );
        registry.register("mailplug_live_nodes", "Nodes sharing the store, as this node last counted them", live_nodes.clone());
        Metrics {
            registry,
            fetched,
            bytes,
            errors,
            last_success,
            traps,
            idle_connections,
            states,
            tenants_loaded,
            tenants_invalid,
            rss,
            outbox_depth,
            outbox_oldest_age,
            oldest_queued: Mutex::default(),
            webhook_failures,
            webhook_dead,
            leases_held,
            leases_acquired,
            leases_lost,
            live_nodes,
            scrape: Mutex::new(()),
        }
    }

    /// Forgets a removed tenant's series.
    pub fn forget_tenant(&self, tenant: &str, mailboxes: &[String]) {
        for m in mailboxes {
            let l = MailboxLabels { tenant: tenant.into(), mailbox: m.clone() };
            self.fetched.remove(&l);
            self.bytes.remove(&l);
            self.last_success.remove(&l);
        }
    }

    /// A queue's number of rows in `state`.
    pub fn set_outbox_depth(&self, tenant: &str, queue: &str, state: &str, n: i64) {
        let l = QueueStateLabels { tenant: tenant.into(), queue: queue.into(), state: state.into() };
        self.outbox_depth.get_or_create(&l).set(n);
    }

    /// When a queue's oldest queued row was created (None: none queued).
    pub fn set_outbox_oldest(&self, tenant: &str, queue: &str, created_at_ms: Option<i64>) {
        let l = QueueLabels { tenant: tenant.into(), queue: queue.into() };
        let mut m = self.oldest_queued.lock().unwrap_or_else(|p| p.into_inner());
        match created_at_ms {
            Some(at) => {
                m.insert(l, at);
            }
            None => {
                m.remove(&l);
                self.outbox_oldest_age.get_or_create(&l).set(0);
            }
        }
    }

    /// Forgets a removed tenant's outbox series.
    pub fn forget_outbox(&self, tenant: &str) {
        let mut m = self.oldest_queued.lock().unwrap_or_else(|p| p.into_inner());
        let gone: Vec<QueueLabels> = m.keys().filter(|l| l.tenant == tenant).cloned().collect();
        for l in gone {
            m.remove(&l);
            self.outbox_oldest_age.remove(&l);
            for state in ["queued", "in-flight", "held", "failed"] {
                self.outbox_depth.remove(&QueueStateLabels { tenant: l.tenant.clone(), queue: l.queue.clone(), state: state.into() });
            }
        }
    }

    /// The Prometheus text exposition, with the gauges taken from the board now.
    pub fn render(&self, board: &Board) -> String {
        let _one = self.scrape.lock().unwrap_or_else(|p| p.into_inner());
        self.states.clear();
        board.read(|b| {
            self.tenants_loaded.set(b.tenants.len() as i64);
            let previous = b.tenants.values().filter(|t| t.config_error.is_some()).count();
            self.tenants_invalid.set((b.invalid.len() + previous) as i64);
            for t in b.tenants.values() {
                for m in t.mailboxes.values() {
                    for name in Phase::NAMES {
                        let l = StateLabels { tenant: t.tenant.clone(), mailbox: m.name.clone(), state: name.into() };
                        self.states.get_or_create(&l).set(i64::from(m.phase.name() == name));
                    }
                }
            }
        });
        self.rss.set(resident_bytes().unwrap_or(0) as i64);
        {
            let now = super::state::now_ms();
            let m = self.oldest_queued.lock().unwrap_or_else(|p| p.into_inner());
            for (l, at) in m.iter() {
                self.outbox_oldest_age.get_or_create(l).set(((now - at) / 1000).max(0));
            }
        }
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// The process's resident memory from /proc/self/statm (pages; 4 KiB on the machines served).
pub fn resident_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = text.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * if page > 0 { page as u64 } else { 4096 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendered_metrics_carry_the_counters_and_the_states() {
        let m = Metrics::new();
        let board = Board::default();
        m.fetched.get_or_create(&MailboxLabels { tenant: "t".into(), mailbox: "in".into() }).inc_by(3);
        let text = m.render(&board);
        assert!(text.contains("mailplug_messages_fetched_total{tenant=\"t\",mailbox=\"in\"} 3"), "{text}");
        assert!(text.contains("process_resident_memory_bytes "), "{text}");
        assert!(text.contains("mailplug_idle_connections 0"), "{text}");
        m.idle_connections.inc();
        assert!(m.render(&board).contains("mailplug_idle_connections 1"));
        assert!(resident_bytes().unwrap_or(0) > 0);
    }
}
