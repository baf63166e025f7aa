//! Which store the CLI's commands use: `--store PATH|postgres://...` (with
//! `--store-password-file`, else `MAILPLUG_STORE_PASSWORD_FILE`), else the tenant file's
//! `database` (SQLite, the default).

use std::path::PathBuf;
use std::sync::OnceLock;

use mailplug_host::store::{Location, Store};
use mailplug_host::{HostError, TenantConfig};

/// `--store` and `--store-password-file`, set once by `main`.
static SELECTED: OnceLock<(Option<String>, Option<PathBuf>)> = OnceLock::new();

/// Records the global options (called once, before any command runs).
pub fn select(store: Option<String>, password_file: Option<PathBuf>) {
    let _ = SELECTED.set((store, password_file));
}

/// The store for `cfg`: `--store` when given, else the tenant's SQLite `database`.
pub fn location(cfg: &TenantConfig) -> Location {
    match SELECTED.get() {
        Some((Some(store), password_file)) => Location::parse(store, password_file.clone()),
        _ => Location::sqlite(&cfg.database),
    }
}

/// Opens the store for `cfg` (see `location`).
pub fn open(cfg: &TenantConfig) -> Result<Store, HostError> {
    let location = location(cfg);
    if location.password_in_url() {
        eprintln!(
            "mailplug: warning: the PostgreSQL URL holds a password, which other users may see in the process list; put it in a file given with --store-password-file (mode 0600)"
        );
    }
    Store::open(&location)
}
