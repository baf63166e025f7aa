//! The PostgreSQL store (issue 14): the same traits as the SQLite store (`SyncStateStore`,
//! `Outbox`, `Events`, `MessageSink` through `PgSink`, `MessageQuery`) over one database that
//! several `serve` nodes share, plus leases with fencing tokens (`lease`).
//!
//! - Driver and pool: tokio-postgres through deadpool-postgres (bounded pool, bounded waits).
//! - Sync traits, async driver: the store runs its own small tokio runtime (one worker thread)
//!   that owns the pool's connections. A trait call hands its work to that runtime and waits
//!   for the answer; on a multi-threaded tokio runtime the wait is wrapped in `block_in_place`,
//!   so the caller's worker is not lost while the database answers (except on a thread that
//!   called `wait_plainly_here`, such as the service's `LocalSet` thread, where tokio refuses
//!   `block_in_place`: there the wait is plain, as an SQLite call is). This works from plain
//!   threads, from both tokio runtime flavours and from the SQLite store's callers unchanged,
//!   and never deadlocks on a runtime the store does not own. Async code that wants no
//!   blocking at all uses `PgStore::run`, which awaits the same work.
//! - Schema: versioned migrations (`migrate`), applied at start under an advisory lock.
//! - Same rules as SQLite: messages deduplicated by (source, server id) and by Message-ID plus
//!   SHA-256 (`sink`), raw bytes as `bytea`, OAuth tokens encrypted with the same keys and format
//!   (`tenant::tokens`), outbox state changes and events in one transaction (`outbox`, `events`).
//! - Fencing: `PgStore::fenced` gives a view whose writes that matter (message commits,
//!   sync-state saves, outbox transitions of the sender, the webhook deliverer's event marks)
//!   carry a lease's fencing token and are refused with `HostError::LeaseLost` once the lease
//!   is lost (`lease`).
//! - Connections: TLS with `sslmode=require|verify-ca|verify-full` (and `sslrootcert=FILE`)
//!   through rustls (`tls`); without TLS only a server on loopback (or a Unix socket) is
//!   accepted. The password comes from a file only its owner can read (or from the URL, which
//!   is then never shown: `store::select::redact_url`).

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

use crate::engine::Tokens;
use crate::error::HostError;
use crate::store::{SavedState, SyncStateStore};

mod events;
pub mod lease;
mod migrate;
mod outbox;
mod query;
mod sink;
pub mod tls;

pub use lease::{Fence, Heartbeat, Lease, LeaseInfo, Leases, Renewal};
pub use sink::PgSink;

thread_local! {
    /// Set on a thread whose calls must wait without `block_in_place` (`wait_plainly_here`).
    static WAIT_PLAINLY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Makes this thread's store calls wait plainly instead of through `block_in_place`, which
/// tokio refuses (panics) inside a `LocalSet`: for the thread that runs one, such as the
/// service's actors' thread. Its tasks wait for the database in turn, as they do for SQLite;
/// the runtime's worker threads are not involved.
pub fn wait_plainly_here() {
    WAIT_PLAINLY.set(true);
}

/// Every call waits at most this long for a pooled connection.
const POOL_WAIT: Duration = Duration::from_secs(10);
/// And at most this long in all (statements also carry `statement_timeout`).
const CALL_LIMIT: Duration = Duration::from_secs(60);
/// Connections per store (per node).
const POOL_SIZE: usize = 16;

/// The shared part: what the store's tasks use (the pool and the token keys; opaque outside the crate).
pub struct Db {
    pub(crate) pool: Pool,
    /// The keys OAuth2 tokens are encrypted with (`crate::tokens`).
    pub(crate) keys: crate::tokens::SecretKeys,
    /// "PostgreSQL at host:port" (for errors; never the URL).
    pub(crate) server: String,
}

/// Owns the store's runtime; shut down without waiting when the last handle goes (dropping a
/// runtime the normal way inside async code panics).
struct Rt(Option<tokio::runtime::Runtime>);

impl Drop for Rt {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// An open PostgreSQL store. Cloning is cheap (the pool and runtime are shared).
#[derive(Clone)]
pub struct PgStore {
    db: Arc<Db>,
    rt: Arc<Rt>,
    /// Set by `fenced`: the writes that matter carry this lease's token.
    fence: Option<Fence>,
}

pub(crate) fn pg_err(what: &str) -> impl Fn(tokio_postgres::Error) -> HostError + '_ {
    move |e| {
        // A server error's own message (and its detail) says more than the driver's summary.
        let text = match e.as_db_error() {
            Some(d) => format!("{} ({})", d.message(), d.code().code()),
            None => e.to_string(),
        };
        HostError::Storage(format!("PostgreSQL, {what}: {text}"))
    }
}

/// Text for a `text` column: PostgreSQL refuses NUL characters in text, which a parsed header
/// or body may hold; they become U+FFFD (the raw bytes keep the original).
pub(crate) fn pg_text(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains('\0') {
        std::borrow::Cow::Owned(s.replace('\0', "\u{fffd}"))
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

pub(crate) fn pg_opt_text(s: &Option<String>) -> Option<String> {
    s.as_deref().map(|s| pg_text(s).into_owned())
}

/// Whether `host` (from a connection URL) is this machine: loopback addresses, `localhost` or
/// a Unix socket folder.
fn is_local(host: &tokio_postgres::config::Host) -> bool {
    match host {
        tokio_postgres::config::Host::Unix(_) => true,
        tokio_postgres::config::Host::Tcp(h) => {
            h.eq_ignore_ascii_case("localhost")
                || h.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
        }
    }
}

/// Reads a password file, which must be readable by its owner only.
fn read_password_file(path: &Path) -> Result<String, HostError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path)
        .map_err(|e| HostError::Storage(format!("cannot read the PostgreSQL password file {}: {e}", path.display())))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(HostError::Storage(format!(
            "the PostgreSQL password file {} can be read by other users: `chmod 600 {}`, then start again \
             / die PostgreSQL-Passwortdatei {} ist für andere Benutzer lesbar: `chmod 600 {}`, dann neu starten",
            path.display(),
            path.display(),
            path.display(),
            path.display()
        )));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| HostError::Storage(format!("cannot read the PostgreSQL password file {}: {e}", path.display())))?;
    Ok(text.trim_end_matches(['\n', '\r']).to_string())
}

impl PgStore {
    /// Connects to `url` (`postgres://user@host:port/database`), with the password from
    /// `password_file` when given (else from the URL), the token keys from the environment
    /// (`tokens::SecretKeys::from_env`), and brings the schema to the current version.
    pub fn connect(url: &str, password_file: Option<&Path>) -> Result<PgStore, HostError> {
        PgStore::connect_with_keys(url, password_file, crate::tokens::SecretKeys::from_env())
    }

    /// Like `connect`, with the given keys for OAuth2 tokens.
    pub fn connect_with_keys(url: &str, password_file: Option<&Path>, keys: crate::tokens::SecretKeys) -> Result<PgStore, HostError> {
        // Never echo the URL: it may hold a password.
        let tls::Target { mut config, mode, root_cert } = tls::parse(url)?;
        let host_name = |h: &tokio_postgres::config::Host| match h {
            tokio_postgres::config::Host::Tcp(h) => h.clone(),
            tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
        };
        if mode == tls::SslMode::Disable {
            if let Some(bad) = config.get_hosts().iter().find(|h| !is_local(h)) {
                let host = host_name(bad);
                return Err(HostError::Storage(format!(
                    "refusing to connect to PostgreSQL on {host} without TLS: only a server on this machine (127.0.0.1, ::1, \
                     localhost or a Unix socket) may be reached in plain text; add ?sslmode=verify-full to the URL (and \
                     &sslrootcert=FILE when the server's CA is not a system one) / Verbindung zu PostgreSQL auf {host} ohne \
                     TLS abgelehnt: nur ein Server auf diesem Rechner darf unverschlüsselt erreicht werden; ?sslmode=verify-full \
                     an die URL anhängen (und &sslrootcert=DATEI, wenn die CA des Servers keine System-CA ist)"
                )));
            }
        }
        let server = format!(
            "PostgreSQL at {}",
            config
                .get_hosts()
                .iter()
                .enumerate()
                .map(|(i, h)| format!("{}:{}", host_name(h), config.get_ports().get(i).or(config.get_ports().first()).copied().unwrap_or(5432)))
                .collect::<Vec<_>>()
                .join(",")
        );
        if let Some(p) = password_file {
            config.password(read_password_file(p)?);
        }
        config.application_name("mailplug");
        config.connect_timeout(Duration::from_secs(10));
        // The URL's own options are kept: `?options=-c%20search_path%3Dname` puts the store in a
        // schema of its own (one database, several independent sets of nodes, as the tests do).
        let own = config.get_options().map(|o| format!("{o} ")).unwrap_or_default();
        config.options(&format!("{own}-c statement_timeout=30000 -c lock_timeout=15000 -c idle_in_transaction_session_timeout=60000"));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("mailplug-pg")
            .enable_all()
            .build()
            .map_err(|e| HostError::Storage(format!("cannot start the PostgreSQL store's runtime: {e}")))?;
        let manager_config = ManagerConfig { recycling_method: RecyclingMethod::Fast };
        let manager = match mode {
            tls::SslMode::Disable => Manager::from_config(config, NoTls, manager_config),
            mode => {
                let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls::client_config(mode, root_cert.as_deref())?);
                Manager::from_config(config, tls, manager_config)
            }
        };
        let pool = {
            let _entered = rt.enter();
            Pool::builder(manager)
                .max_size(POOL_SIZE)
                .runtime(deadpool_postgres::Runtime::Tokio1)
                .wait_timeout(Some(POOL_WAIT))
                .create_timeout(Some(Duration::from_secs(10)))
                .recycle_timeout(Some(Duration::from_secs(5)))
                .build()
                .map_err(|e| HostError::Storage(format!("cannot set up the PostgreSQL connection pool: {e}")))?
        };
        let store = PgStore { db: Arc::new(Db { pool, keys, server }), rt: Arc::new(Rt(Some(rt))), fence: None };
        store.wait(|db| async move { migrate::migrate(&db).await })?;
        Ok(store)
    }

    /// A view of this store whose writes that matter carry `fence` (a lease's token) and are
    /// refused with `HostError::LeaseLost` once the lease is lost: message commits of its
    /// sinks, sync-state saves, and the sender's outbox transitions (`record_commit_point`,
    /// `record_outcome`, `recover`) of rows in the fenced queue, and the webhook deliverer's
    /// event marks (`mark_delivered`, `mark_failed`, `mark_dead`) of the fenced tenant's events
    /// (under a `webhook:<tenant>` lease).
    pub fn fenced(&self, fence: Fence) -> PgStore {
        PgStore { fence: Some(fence), ..self.clone() }
    }

    /// The fence of this view, if any.
    pub fn fence(&self) -> Option<&Fence> {
        self.fence.as_ref()
    }

    /// Runs `work` on the store's runtime and waits for it (see the module doc), at most
    /// `CALL_LIMIT`.
    pub(crate) fn wait<T, F>(&self, work: impl FnOnce(Arc<Db>) -> F) -> Result<T, HostError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, HostError>> + Send + 'static,
    {
        let rt = self.rt.0.as_ref().ok_or_else(|| HostError::Storage("the PostgreSQL store is closed".into()))?;
        let fut = work(self.db.clone());
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        rt.spawn(async move {
            let result = tokio::time::timeout(CALL_LIMIT, fut).await.unwrap_or_else(|_| {
                Err(HostError::Storage(format!("PostgreSQL did not answer within {} s", CALL_LIMIT.as_secs())))
            });
            let _ = tx.send(result);
        });
        let recv = move || rx.recv().unwrap_or_else(|_| Err(HostError::Storage("the PostgreSQL store stopped".into())));
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread && !WAIT_PLAINLY.get() => {
                tokio::task::block_in_place(recv)
            }
            _ => recv(),
        }
    }

    /// Like `wait`, for async callers: awaits the work without blocking their thread.
    pub async fn run<T, F>(&self, work: impl FnOnce(Arc<Db>) -> F) -> Result<T, HostError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, HostError>> + Send + 'static,
    {
        let rt = self.rt.0.as_ref().ok_or_else(|| HostError::Storage("the PostgreSQL store is closed".into()))?;
        let fut = work(self.db.clone());
        match rt.spawn(async move { tokio::time::timeout(CALL_LIMIT, fut).await }).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(HostError::Storage(format!("PostgreSQL did not answer within {} s", CALL_LIMIT.as_secs()))),
            Err(_) => Err(HostError::Storage("the PostgreSQL store stopped".into())),
        }
    }

    /// A sink that stores one mailbox's deliveries (see `PgSink`); in a fenced view, each
    /// commit carries the fence.
    pub fn sink(&self, tenant: &str, mailbox: &str) -> PgSink {
        PgSink::new(self.clone(), tenant, mailbox)
    }

    /// The schema version of the database (`migrate`).
    pub fn schema_version(&self) -> Result<i32, HostError> {
        self.wait(|db| async move { migrate::version(&db).await })
    }
}

impl Db {
    pub(crate) async fn client(&self) -> Result<deadpool_postgres::Client, HostError> {
        self.pool.get().await.map_err(|e| {
            // A TLS failure (a certificate, a server without TLS) is the admin's to fix: typed.
            if let deadpool_postgres::PoolError::Backend(b) = &e {
                if let Some(message) = tls::tls_failure(b) {
                    return HostError::Tls { server: self.server.clone(), message };
                }
            }
            // The server's own reason (a wrong password, an unknown database) says what to fix.
            let why = match &e {
                deadpool_postgres::PoolError::Backend(b) => match b.as_db_error() {
                    Some(d) => format!("{} ({})", d.message(), d.code().code()),
                    None => b.to_string(),
                },
                other => other.to_string(),
            };
            HostError::Storage(format!(
                "cannot get a PostgreSQL connection: {why}; check that the server runs and accepts this user and password"
            ))
        })
    }
}

impl SyncStateStore for PgStore {
    fn load(&self, tenant: &str, mailbox: &str) -> Result<Option<SavedState>, HostError> {
        let (tenant, mailbox) = (tenant.to_string(), mailbox.to_string());
        self.wait(|db| async move {
            let c = db.client().await?;
            let row = c
                .query_opt("SELECT state, binding FROM sync_state WHERE tenant = $1 AND mailbox = $2", &[&tenant, &mailbox])
                .await
                .map_err(pg_err("reading sync state"))?;
            Ok(row.map(|r| SavedState { state: r.get(0), binding: r.get(1) }))
        })
    }

    /// In a fenced view the save carries the token: refused once the lease is lost, and never
    /// over a state saved under a newer token.
    fn save(&self, tenant: &str, mailbox: &str, binding: &str, state: &[u8]) -> Result<(), HostError> {
        let (tenant, mailbox, binding, state) = (tenant.to_string(), mailbox.to_string(), binding.to_string(), state.to_vec());
        let fence = self.fence.clone();
        self.wait(|db| async move {
            let mut c = db.client().await?;
            let tx = c.transaction().await.map_err(pg_err("saving sync state"))?;
            let token = match &fence {
                Some(f) => {
                    f.check(&tx).await?;
                    Some(f.token)
                }
                None => None,
            };
            let n = tx
                .execute(
                    "INSERT INTO sync_state (tenant, mailbox, state, binding, token) VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (tenant, mailbox) DO UPDATE SET state = excluded.state, binding = excluded.binding,
                        token = excluded.token
                     WHERE excluded.token IS NULL OR sync_state.token IS NULL OR sync_state.token <= excluded.token",
                    &[&tenant, &mailbox, &state, &binding, &token],
                )
                .await
                .map_err(pg_err("saving sync state"))?;
            if n == 0 {
                if let Some(f) = &fence {
                    return Err(f.lost(None));
                }
            }
            tx.commit().await.map_err(pg_err("saving sync state"))
        })
    }

    fn load_tokens(&self, tenant: &str, client: &str, username: &str) -> Result<Option<Tokens>, HostError> {
        let (tenant, client, username) = (tenant.to_string(), client.to_string(), username.to_string());
        self.wait(|db| async move { query::load_tokens(&db, &tenant, &client, &username).await })
    }

    fn save_tokens(&self, tenant: &str, client: &str, username: &str, t: &Tokens) -> Result<(), HostError> {
        let (tenant, client, username, t) = (tenant.to_string(), client.to_string(), username.to_string(), t.clone());
        self.wait(|db| async move {
            let c = db.client().await?;
            query::save_tokens(&db, &c, &tenant, &client, &username, &t).await
        })
    }

    fn token_storage_ready(&self) -> Result<(), HostError> {
        self.db.keys.ready()
    }
}
