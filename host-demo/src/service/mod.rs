//! `mailplug serve`: the always-on service. It runs every tenant of a folder (`tenants`), one
//! actor per mailbox (`scheduler`), keeps what the API and the metrics show (`state`,
//! `metrics`), answers the HTTP API (`api`) and stops cleanly (`shutdown`).
//!
//! Threads: the guest's calls are not `Send` (the store's connection, the sinks), so the
//! actors and every other guest call run on one thread in a `LocalSet`; the HTTP API runs on
//! the runtime's worker threads and hands guest work (a check, a sender plan) to that thread
//! as a `Job`. Each operation takes its own instance from the pool with the tenant's memory
//! cap and CPU budget: a trap ends that operation only.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::config::TenantConfig;
use crate::engine::Stage;
use crate::error::HostError;
use crate::secret::Secret;
use crate::store::{Location, Opener, Store};
use crate::{Plugin, RuntimeOptions};

pub mod api;
pub mod events;
pub mod idle;
pub mod leases;
pub mod metrics;
pub mod outbox;
pub mod scheduler;
pub mod shutdown;
pub mod state;
pub mod tenants;
pub mod webhook;

pub use scheduler::Backoff;

/// How the service runs.
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    /// The folder of tenant files (`*.toml`).
    pub tenants: PathBuf,
    /// The service's store (every tenant's messages, sync state, outbox, events and tokens):
    /// an SQLite file (the default) or a PostgreSQL database (`--store postgres://...`).
    pub store: Location,
    /// Where the HTTP API listens (port 0: any free port, printed at start).
    pub listen: SocketAddr,
    /// The file with the admin's bearer token (mode 0600); None: no admin routes.
    pub admin_token_file: Option<PathBuf>,
    /// Fetches running at once, over all tenants.
    pub max_concurrent: usize,
    /// Fetches running at once for one tenant.
    pub max_per_tenant: usize,
    /// The component.
    pub plugin: PathBuf,
    pub backoff: Backoff,
    /// How often the tenants folder is scanned.
    pub rescan: Duration,
    /// How long a stopping service waits for operations in progress.
    pub shutdown_grace: Duration,
    /// With a PostgreSQL store: this node's id in the lease table (None: host name, process
    /// id and start time: `leases::default_node_id`).
    pub node_id: Option<String>,
    /// With a PostgreSQL store: how long a lease holds without renewal.
    pub lease_ttl: Duration,
}

impl ServiceOptions {
    /// The defaults for a tenants folder and a store.
    pub fn new(tenants: PathBuf, store: Location, plugin: PathBuf) -> ServiceOptions {
        ServiceOptions {
            tenants,
            store,
            listen: SocketAddr::from(([127, 0, 0, 1], 8025)),
            admin_token_file: None,
            max_concurrent: 8,
            max_per_tenant: 4,
            plugin,
            backoff: Backoff::default(),
            rescan: Duration::from_secs(2),
            shutdown_grace: Duration::from_secs(10),
            node_id: None,
            lease_ttl: leases::DEFAULT_TTL,
        }
    }
}

/// Guest work handed to the actors' thread: made there, so it may hold what is not `Send`.
pub type Job = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()>>> + Send>;

/// What every part of the service shares.
pub struct Shared {
    pub options: ServiceOptions,
    pub plugin: Plugin,
    pub board: state::Board,
    pub metrics: metrics::Metrics,
    /// The global concurrency cap.
    pub slots: Arc<Semaphore>,
    /// Cancelled when the service stops; every tenant's token is its child.
    pub root: CancellationToken,
    /// Every actor, to wait for them at shutdown.
    pub all: TaskTracker,
    pub admin_token: Option<Secret>,
    /// The queue actors' wake-ups (an enqueue through the API wakes its queue's sender).
    pub outbox: outbox::Wakes,
    /// The tenants with a `[webhook]` table, followed by the webhook deliverer.
    pub webhooks: watch::Sender<Vec<webhook::Target>>,
    /// The tenant whose events were just committed (a run stored messages, the outbox moved):
    /// that tenant's SSE streams and the webhook deliverer read the store at once instead of
    /// at their next poll (`events::SSE_POLL`, the webhook policy's `poll_interval`).
    pub events_written: tokio::sync::broadcast::Sender<String>,
    jobs: mpsc::UnboundedSender<Job>,
    /// The store, opened at start: each actor, the webhook deliverer and the API open their
    /// handles from it (`Opener::open`; a fenced view with `Store::fenced`).
    pub store: Opener,
    /// SQLite: a connection for the API's reads (PostgreSQL reads share the pool instead).
    reader: Mutex<Option<Store>>,
    /// PostgreSQL: this node's leases (the claimer runs the actors of what it holds). None
    /// with SQLite: one node runs every tenant's actors.
    pub leases: Option<Arc<leases::LeaseNode>>,
}

impl Shared {
    /// Runs `f` on the actors' thread under the global cap; its result, or an error when the
    /// service is stopping.
    pub async fn run_local<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(Arc<Shared>) -> Pin<Box<dyn Future<Output = T>>> + Send + 'static,
    ) -> Result<T, HostError> {
        let (tx, rx) = oneshot::channel();
        let me = self.clone();
        let job: Job = Box::new(move || {
            Box::pin(async move {
                let Ok(_slot) = me.slots.clone().acquire_owned().await else { return };
                let _ = tx.send(f(me.clone()).await);
            })
        });
        let stopping = || HostError::Plugin("the service is stopping".into());
        self.jobs.send(job).map_err(|_| stopping())?;
        rx.await.map_err(|_| stopping())
    }

    /// Runs `f` with a handle on the store on a blocking thread: SQLite's one reader
    /// connection, or a PostgreSQL view sharing the pool (reads in parallel).
    pub async fn read_store<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Store) -> Result<T, HostError> + Send + 'static,
    ) -> Result<T, HostError> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            if let Opener::Postgres(_) = &me.store {
                return f(&me.store.open()?);
            }
            let mut reader = me.reader.lock().unwrap_or_else(|p| p.into_inner());
            if reader.is_none() {
                *reader = Some(me.store.open()?);
            }
            match reader.as_ref() {
                Some(store) => f(store),
                None => Err(HostError::Storage("the store reader is not open".into())),
            }
        })
        .await
        .map_err(|e| HostError::Storage(format!("the store reader failed: {e}")))?
    }

    /// The component's explanation of an error (cause and action, English and German), or the
    /// host's for a trap; None for errors that need none beyond their text.
    pub async fn explain(&self, cfg: &TenantConfig, e: &HostError) -> (Option<String>, Option<String>) {
        if matches!(e, HostError::Trap(_)) {
            return (
                Some(format!(
                    "The mail component stopped at this tenant's limit; other tenants are not affected. {e} The mailbox waits until the tenant's file changes."
                )),
                Some(
                    "Die Mail-Komponente wurde an der Grenze dieses Mandanten angehalten; andere Mandanten sind nicht betroffen. \
                     Erhöhen Sie die genannte Grenze im Abschnitt [limits] oder entfernen Sie die Nachricht, die mehr braucht. \
                     Das Postfach wartet, bis sich die Datei des Mandanten ändert."
                        .into(),
                ),
            );
        }
        let Ok(mut instance) = crate::ops::instance_for(&self.plugin, cfg).await else { return (None, None) };
        match crate::check::explain(&mut instance, e, Stage::Connect).await {
            Some(d) => (Some(format!("{} {}", d.cause.en, d.action.en)), Some(format!("{} {}", d.cause.de, d.action.de))),
            None => (None, None),
        }
    }
}

/// The admin token: one line from a file only its owner can read.
fn admin_token(path: &std::path::Path) -> Result<Secret, HostError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path)
        .map_err(|e| HostError::NotFound(format!("--admin-token-file {}: cannot read it: {e}", path.display())))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(HostError::NotFound(format!(
            "--admin-token-file {}: others can read it (mode {:o}); make it private with chmod 600",
            path.display(),
            meta.permissions().mode() & 0o777
        )));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| HostError::NotFound(format!("--admin-token-file {}: cannot read it: {e}", path.display())))?;
    let token = text.trim_end_matches(['\r', '\n']);
    if token.chars().count() < 16 || token.chars().any(|c| c.is_control() || c == ' ') {
        return Err(HostError::NotFound(format!(
            "--admin-token-file {}: the token must be one line of at least 16 characters without spaces",
            path.display()
        )));
    }
    Ok(Secret::new(token.to_string()))
}

/// The runtime sized for the service: slots as large as the largest memory cap among the
/// tenant files there now (later ones with a larger cap are refused with an error saying so),
/// room for every operation the global cap allows (its instance and its parse instance) and
/// for a few API calls.
fn runtime_options(opts: &ServiceOptions) -> RuntimeOptions {
    let mut limits = crate::config::Limits::default();
    if let Ok(entries) = std::fs::read_dir(&opts.tenants) {
        for path in entries.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "toml")) {
            if let Ok(cfg) = TenantConfig::load(&path) {
                limits.guest_memory_mb = limits.guest_memory_mb.max(cfg.limits.guest_memory_mb);
                limits.parse_memory_mb = limits.parse_memory_mb.max(cfg.limits.parse_memory_mb);
            }
        }
    }
    let instances = (opts.max_concurrent.max(1) as u32).saturating_mul(2).saturating_add(4);
    RuntimeOptions::for_limits(&limits).with_instances(instances)
}

/// Raises the soft limit of open files to the hard limit: every idling mailbox holds a socket,
/// and the usual soft limit (1,024) would refuse connections, store files and API clients
/// long before 1,000 mailboxes. Returns (soft limit now, hard limit); None when unknown.
pub fn raise_open_files_limit() -> Option<(u64, u64)> {
    let mut l = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a rlimit of this process.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) } != 0 {
        return None;
    }
    if l.rlim_cur < l.rlim_max {
        let raised = libc::rlimit { rlim_cur: l.rlim_max, rlim_max: l.rlim_max };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            l.rlim_cur = l.rlim_max;
        }
    }
    Some((l.rlim_cur as u64, l.rlim_max as u64))
}

/// Runs the service until SIGTERM or SIGINT; must be called inside a `LocalSet`.
/// `on_listening` is told the address the API listens on.
pub async fn run(options: ServiceOptions, on_listening: impl FnOnce(SocketAddr)) -> Result<(), HostError> {
    // The actors' thread runs a LocalSet, where tokio refuses `block_in_place`.
    crate::store::postgres::wait_plainly_here();
    let admin_token = options.admin_token_file.as_deref().map(admin_token).transpose()?;
    match raise_open_files_limit() {
        Some((soft, hard)) if soft < 4096 => {
            warn!(open_files = soft, hard_limit = hard, "few files may be open at once: each idling mailbox holds one; raise the hard limit (ulimit -Hn, LimitNOFILE=)")
        }
        Some((soft, _)) => info!(open_files = soft, "open files limit"),
        None => {}
    }
    if options.store.password_in_url() {
        warn!("the PostgreSQL URL holds a password, which other users may see in the process list; put it in a file given with --store-password-file (mode 0600)");
    }
    let store = Opener::connect(&options.store)?;
    let reader = match &store {
        Opener::Sqlite(_) => Some(store.open()?),
        Opener::Postgres(_) => None,
    };
    let plugin = Plugin::load_with(&options.plugin, &runtime_options(&options))?;
    if let crate::runtime::CacheStatus::Unused(why) = plugin.cache_status() {
        warn!(why = %why, "the compiled component is not cached");
    }
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|e| HostError::Network { server: options.listen.to_string(), message: format!("cannot listen: {e}") })?;
    let local_addr = listener.local_addr().map_err(|e| HostError::Network { server: options.listen.to_string(), message: e.to_string() })?;
    let (jobs, mut job_rx) = mpsc::unbounded_channel::<Job>();
    let (metrics, root) = (metrics::Metrics::new(), CancellationToken::new());
    let lease_node = match store.postgres() {
        Some(pg) => {
            let id = options.node_id.clone().unwrap_or_else(leases::default_node_id);
            let node = Arc::new(leases::LeaseNode::new(pg.clone(), id, options.lease_ttl, root.clone(), &metrics));
            // Counted before the first claim, so that nodes already running share with this one.
            let (pg, id, ttl) = (pg.clone(), node.id.clone(), node.ttl);
            let hb = tokio::task::spawn_blocking(move || crate::store::postgres::Leases::heartbeat(&pg, &id, ttl))
                .await
                .map_err(|e| HostError::Storage(format!("the first heartbeat failed: {e}")))??;
            info!(node = %node.id, lease_ttl_secs = node.ttl.as_secs_f64(), live_nodes = hb.live_nodes, "leases: this node shares the tenants with the other nodes on the store");
            node.beat(hb);
            Some(node)
        }
        None => None,
    };
    let shared = Arc::new(Shared {
        slots: Arc::new(Semaphore::new(options.max_concurrent.max(1))),
        options,
        plugin,
        board: state::Board::default(),
        metrics,
        root,
        all: TaskTracker::new(),
        admin_token,
        outbox: outbox::Wakes::default(),
        webhooks: watch::Sender::new(Vec::new()),
        events_written: tokio::sync::broadcast::Sender::new(256),
        jobs,
        store,
        reader: Mutex::new(reader),
        leases: lease_node,
    });
    // Guest work from the API, run here.
    let stop = shared.root.clone();
    tokio::task::spawn_local(async move {
        loop {
            tokio::select! {
                job = job_rx.recv() => match job {
                    Some(job) => { tokio::task::spawn_local(job()); }
                    None => break,
                },
                _ = stop.cancelled() => break,
            }
        }
    });
    events::start_webhooks(&shared)?;
    tokio::task::spawn_local(tenants::Tenants::new(shared.clone()).run());
    let lease_stop = CancellationToken::new();
    if let Some(node) = &shared.leases {
        tokio::spawn(leases::renew::run(node.clone(), lease_stop.clone()));
        tokio::task::spawn_local(leases::claim::Claimer::new(shared.clone(), node.clone()).run());
    }
    let server = tokio::spawn(api::serve(listener, shared.clone()));
    info!(listen = %local_addr, tenants = %shared.options.tenants.display(), store = %shared.options.store, store_kind = shared.store.kind(), "mailplug serve started");
    on_listening(local_addr);

    let signal = shutdown::signal().await;
    info!(signal, "stopping: no new work; operations in progress finish");
    shutdown::stop(&shared).await;
    if let Some(node) = &shared.leases {
        // The actors stopped: other nodes may take everything over now.
        node.release_all().await;
    }
    lease_stop.cancel();
    match tokio::time::timeout(Duration::from_secs(2), server).await {
        Ok(Ok(Err(e))) => warn!(error = %e, "the API server ended with an error"),
        Err(_) => warn!("the API server did not stop in time"),
        _ => {}
    }
    info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_open_files_limit_is_raised_to_the_hard_limit() {
        let mut l = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit/setrlimit with valid pointers, on this test process.
        unsafe {
            assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut l), 0);
            // Lowered first (when it can be), so that the raise has something to do.
            if l.rlim_max > 256 {
                let low = libc::rlimit { rlim_cur: 256, rlim_max: l.rlim_max };
                assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &low), 0);
            }
        }
        let (soft, hard) = super::raise_open_files_limit().expect("the limits are known");
        assert_eq!((soft, hard), (l.rlim_max as u64, l.rlim_max as u64));
        let mut now = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: as above.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut now) }, 0);
        assert_eq!(now.rlim_cur, l.rlim_max, "the process's soft limit is the hard one now");
    }
}
