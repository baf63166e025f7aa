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
