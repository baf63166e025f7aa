//! `mailplug serve`: runs the service (`mailplug_host::service`) until SIGTERM or SIGINT.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use mailplug_host::ops;
use mailplug_host::service::{self, Backoff, ServiceOptions};
use mailplug_host::store::Location;

use super::args::ServeArgs;
use super::output::fail;

/// The store's default place: the data dir ($XDG_DATA_HOME/mailplug, else ~/.local/share/mailplug).
fn default_store() -> Option<PathBuf> {
    let data = match std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".local").join("share"),
    };
    Some(data.join("mailplug").join("mailplug-serve.sqlite3"))
}

/// Logs to stderr through `tracing`, at `--log`, else $RUST_LOG, else "info".
fn init_logs(filter: Option<&str>) {
    use tracing_subscriber::EnvFilter;
    let filter = match filter {
        Some(f) => EnvFilter::new(f),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(false).try_init();
}

/// Runs the service on the store `store` (`--store`: an SQLite path or a PostgreSQL URL, with
/// the password from `password_file`), by default the SQLite file in the data dir.
pub fn run_serve(plugin: Option<PathBuf>, store: Option<String>, password_file: Option<PathBuf>, args: ServeArgs) -> ExitCode {
    init_logs(args.log.as_deref());
    let store = match store {
        Some(s) => Location::parse(&s, password_file),
        None => match default_store() {
            Some(p) => Location::sqlite(p),
            None => return fail("no --store given and no data dir (set HOME or XDG_DATA_HOME)", 2),
        },
    };
    if !args.tenants.is_dir() {
        return fail(format!("--tenants {}: not a folder", args.tenants.display()), 2);
    }
    let mut opts = ServiceOptions::new(args.tenants, store, plugin.unwrap_or_else(ops::default_plugin_path));
    opts.listen = args.listen;
    opts.admin_token_file = args.admin_token_file;
    opts.max_concurrent = args.max_concurrent.max(1);
    opts.max_per_tenant = args.max_per_tenant.max(1);
    if let Some(id) = args.node_id {
        if id.is_empty() || id.len() > 200 || id.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return fail("--node-id: give 1 to 200 characters without spaces or control characters", 2);
        }
        opts.node_id = Some(id);
    }
    let ttl = match args.lease_ttl {
        Some(secs) => Some(secs),
        None => match std::env::var("MAILPLUG_LEASE_TTL_SECS") {
            Ok(v) => match v.trim().parse::<u64>() {
                Ok(secs) => Some(secs),
                Err(_) => return fail(format!("MAILPLUG_LEASE_TTL_SECS={v}: not a whole number of seconds"), 2),
            },
            Err(_) => None,
        },
    };
    if let Some(secs) = ttl {
        if !(1..=3600).contains(&secs) {
            return fail("the lease TTL (--lease-ttl, MAILPLUG_LEASE_TTL_SECS) must be 1 to 3600 seconds", 2);
        }
        opts.lease_ttl = Duration::from_secs(secs);
    }
    opts.backoff = Backoff {
        base: Duration::from_secs(args.backoff_secs.max(1)),
        max: Duration::from_secs(args.backoff_max_secs.max(args.backoff_secs).max(1)),
    };
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return fail(e, 1),
    };
    let local = tokio::task::LocalSet::new();
    let result = rt.block_on(local.run_until(service::run(opts, |addr| {
        // The one line on stdout: where the API is (tests and scripts read it).
        println!("mailplug serve: listening on http://{addr}");
        use std::io::Write;
        let _ = std::io::stdout().flush();
    })));
    // Abandon whatever outlived the grace period instead of waiting for it.
    {
        let _inside = rt.enter();
        drop(local);
    }
    rt.shutdown_timeout(Duration::from_millis(500));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e, 1),
    }
}
