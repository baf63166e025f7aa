//! What the service knows about each tenant and mailbox, for the API and the metrics: the
//! board. Actors write their mailbox's state here; the API reads snapshots.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use serde::Serialize;

use crate::secret::Secret;

/// What a mailbox actor is doing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum Phase {
    /// Waiting for a concurrency slot, or connecting for its first fetch.
    Connecting,
    /// A fetch is running.
    Polling,
    /// Between two polls; the next one starts at `next_poll_ms`.
    Waiting { next_poll_ms: i64 },
    /// After an error the guest advised to retry later: the next try is at `until_ms`.
    BackingOff { until_ms: i64, attempt: u32 },
    /// After an error the admin must fix first: parked until the tenant's file changes.
    WaitingForFix,
    /// IMAP IDLE without a live instance: the connection idles since `since_ms` (the first
    /// folder; new mail there is fetched at once), no instance and no slot held.
    Idling { since_ms: i64 },
    /// With leases (several nodes on PostgreSQL): another node holds the mailbox's lease (or
    /// nobody yet); this node does not work on it.
    Elsewhere,
}

impl Phase {
    /// The state's name, as the API and the metrics show it.
    pub fn name(&self) -> &'static str {
        match self {
            Phase::Connecting => "connecting",
            Phase::Polling => "polling",
            Phase::Waiting { .. } => "waiting",
            Phase::BackingOff { .. } => "backing-off",
            Phase::WaitingForFix => "waiting-for-fix",
            Phase::Idling { .. } => "idling",
            Phase::Elsewhere => "elsewhere",
        }
    }
    /// Every state name (the metric has a series for each).
    pub const NAMES: [&'static str; 7] = ["connecting", "polling", "waiting", "backing-off", "waiting-for-fix", "idling", "elsewhere"];
}

/// An error of a mailbox's last run, with the guest's explanation for the admin.
#[derive(Debug, Clone, Serialize)]
pub struct LastError {
    pub error: String,
    /// The WIT's kind ("network", "auth-rejected", ...), "trap" for a guest trap, or "host".
    pub kind: String,
    /// "fix-first", "later" or "uncertain".
    pub retry: String,
    pub explanation_en: Option<String>,
    pub explanation_de: Option<String>,
    pub at_ms: i64,
}

/// One mailbox's state.
#[derive(Debug, Clone, Serialize)]
pub struct MailboxState {
    pub name: String,
    pub protocol: &'static str,
    pub poll_interval_secs: u32,
    #[serde(flatten)]
    pub phase: Phase,
    pub last_error: Option<LastError>,
    pub last_success_ms: Option<i64>,
    /// Fetch runs since the service started (successful or not).
    pub runs: u64,
    pub errors: u64,
    /// Messages newly stored and their bytes, since the service started.
    pub fetched: u64,
    pub bytes: u64,
    /// With leases: this node's id while it holds the mailbox's lease; in the API's answer,
    /// for a mailbox in phase `elsewhere`, the node holding it by the lease table (none when
    /// nobody does). Not shown without leases.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// A queue (its actor comes with the outbox).
#[derive(Debug, Clone, Serialize)]
pub struct QueueState {
    pub name: String,
    pub mailboxes: Vec<String>,
}

/// A tenant the service runs.
#[derive(Debug, Clone, Serialize)]
pub struct TenantState {
    pub tenant: String,
    pub file: String,
    /// "running", or "running-previous" when the file changed into something invalid and the
    /// previous good version keeps running.
    pub status: &'static str,
    /// Why the current file is not used (with "running-previous").
    pub config_error: Option<String>,
    pub loaded_at_ms: i64,
    pub mailboxes: BTreeMap<String, MailboxState>,
    pub queues: Vec<QueueState>,
    #[serde(skip)]
    pub api_token: Option<Secret>,
    /// The configuration running (the API's checks use it).
    #[serde(skip)]
    pub config: Arc<crate::config::TenantConfig>,
}

/// A tenant file that does not validate and has no good version running.
#[derive(Debug, Clone, Serialize)]
pub struct InvalidFile {
    pub file: String,
    pub status: &'static str,
    pub error: String,
    pub at_ms: i64,
}

#[derive(Debug, Default)]
pub struct BoardInner {
    pub tenants: BTreeMap<String, TenantState>,
    /// By file path.
    pub invalid: BTreeMap<String, InvalidFile>,
    /// The first scan of the tenants folder is done.
    pub loaded: bool,
}

/// The shared board.
#[derive(Debug, Clone, Default)]
pub struct Board(Arc<RwLock<BoardInner>>);

impl Board {
    pub fn read<T>(&self, f: impl FnOnce(&BoardInner) -> T) -> T {
        f(&self.0.read().unwrap_or_else(|p| p.into_inner()))
    }
    pub fn write<T>(&self, f: impl FnOnce(&mut BoardInner) -> T) -> T {
        f(&mut self.0.write().unwrap_or_else(|p| p.into_inner()))
    }
    /// Changes one mailbox's state, if its tenant and mailbox are still on the board.
    pub fn mailbox(&self, tenant: &str, mailbox: &str, f: impl FnOnce(&mut MailboxState)) {
        self.write(|b| {
            if let Some(m) = b.tenants.get_mut(tenant).and_then(|t| t.mailboxes.get_mut(mailbox)) {
                f(m)
            }
        })
    }
}

/// Milliseconds since 1970.
pub fn now_ms() -> i64 {
    crate::driver::now_ms() as i64
}
