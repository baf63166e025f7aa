//! Store selection: one way to open "the store" from `--store PATH|postgres://...`, giving a
//! handle (`Store`) that the service and the CLI use without knowing which store it is.
//!
//! - `Location`: what the admin wrote. A `postgres://` or `postgresql://` URL selects the
//!   PostgreSQL store (password from `--store-password-file` / `MAILPLUG_STORE_PASSWORD_FILE`);
//!   anything else is the path of an SQLite file (the default, nothing to install). Shown
//!   (`Display`) with any password in the URL replaced by `***`.
//! - `Opener`: the store opened once (`Send + Sync + Clone`, kept by the service): SQLite
//!   remembers the path, PostgreSQL holds the pool. `open` gives a handle: a new connection to
//!   the SQLite file, or a view sharing the PostgreSQL pool.
//! - `Store`: the handle, an enum over the two stores implementing the store traits
//!   (`SyncStateStore` with tokens, `Outbox`, `Events`, `MessageQuery`) plus what the service
//!   and the CLI need besides (`sink`, `find`, `unreported`, `mark_reported`). `fenced` gives
//!   the view whose writes carry a lease's fencing token (PostgreSQL; a no-op for SQLite,
//!   whose one node needs no leases).
//!
//! An enum rather than `Arc<dyn ...>`: the SQLite handle owns a connection that is not `Sync`
//! and its sink borrows it, while the PostgreSQL sink owns a clone of the pool, so the two
//! sinks differ in kind (a trait object would need a boxed sink and lifetimes erased); the
//! match in each method is checked by the compiler, so an operation added to one store and not
//! the other does not build; and nothing is boxed or dispatched at run time on the hot path
//! (each delivery).

use std::fmt;
use std::path::{Path, PathBuf};

use crate::driver::MessageSink;
use crate::engine::{FetchedMessage, SkippedMessage, StepReport, Tokens};
use crate::error::HostError;
use crate::store::postgres::{Fence, PgSink, PgStore};
use crate::store::outbox::Transition;
use crate::store::sqlite::{Database, DbSink, Delivered, MessageDetail, MessageSummary, SinkStats, StoredMessage, Unreported};
use crate::store::{
    Event, Events, Explanation, MessageQuery, NewOutbound, Outbox, OutboxRow, OutboxState, SavedState, StateCount,
    SyncStateStore,
};

/// The environment variable naming the PostgreSQL password file when no
/// `--store-password-file` is given.
pub const PASSWORD_FILE_ENV: &str = "MAILPLUG_STORE_PASSWORD_FILE";

/// Where the store is, as the admin wrote it.
#[derive(Clone, PartialEq, Eq)]
pub enum Location {
    /// An SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL database: the URL (may hold a password: never shown) and the file with
    /// the password.
    Postgres { url: String, password_file: Option<PathBuf> },
}

/// Whether `text` is a PostgreSQL URL (`postgres://` or `postgresql://`, any case).
pub fn is_postgres_url(text: &str) -> bool {
    let lower = text.trim_start().get(..13).unwrap_or(text).to_ascii_lowercase();
    lower.starts_with("postgres://") || lower.starts_with("postgresql://")
}

impl Location {
    /// `text` from `--store`: a PostgreSQL URL, else an SQLite path. `password_file` is
    /// `--store-password-file`; without it `MAILPLUG_STORE_PASSWORD_FILE` is used (PostgreSQL
    /// only).
    pub fn parse(text: &str, password_file: Option<PathBuf>) -> Location {
        if is_postgres_url(text) {
            let password_file =
                password_file.or_else(|| std::env::var_os(PASSWORD_FILE_ENV).filter(|v| !v.is_empty()).map(PathBuf::from));
            Location::Postgres { url: text.trim().to_string(), password_file }
        } else {
            Location::Sqlite(PathBuf::from(text))
        }
    }

    /// An SQLite file.
    pub fn sqlite(path: impl Into<PathBuf>) -> Location {
        Location::Sqlite(path.into())
    }

    /// "sqlite" or "postgres".
    pub fn kind(&self) -> &'static str {
        match self {
            Location::Sqlite(_) => "sqlite",
            Location::Postgres { .. } => "postgres",
        }
    }

    /// The SQLite file, if this is one.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match self {
            Location::Sqlite(p) => Some(p),
            Location::Postgres { .. } => None,
        }
    }

    /// Whether the URL holds a password (better kept in a file: a URL shows in `ps`).
    pub fn password_in_url(&self) -> bool {
        match self {
            Location::Sqlite(_) => false,
            Location::Postgres { url, .. } => url::Url::parse(url).is_ok_and(|u| u.password().is_some()),
        }
    }
}

/// A URL as it may be shown: the password (in the user part or a `password=` parameter)
/// replaced by `***`; a URL that does not parse is not shown at all.
pub fn redact_url(text: &str) -> String {
    let Ok(mut u) = url::Url::parse(text.trim()) else { return "postgres://(a URL that is not valid)".into() };
    if u.password().is_some() {
        let _ = u.set_password(Some("***"));
    }
    if u.query_pairs().any(|(k, _)| k.eq_ignore_ascii_case("password")) {
        let pairs: Vec<(String, String)> = u
            .query_pairs()
            .map(|(k, v)| {
                let v = if k.eq_ignore_ascii_case("password") { "***".to_string() } else { v.into_owned() };
                (k.into_owned(), v)
            })
            .collect();
        u.query_pairs_mut().clear().extend_pairs(pairs);
    }
    u.to_string()
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Sqlite(p) => write!(f, "{}", p.display()),
            Location::Postgres { url, .. } => f.write_str(&redact_url(url)),
        }
    }
}

impl fmt::Debug for Location {
    /// As `Display`: never the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Location({self})")
    }
}

/// The store, opened once; hands out handles (`open`). Cheap to clone, shared across threads.
#[derive(Clone)]
pub enum Opener {
    Sqlite(PathBuf),
    Postgres(PgStore),
}

impl Opener {
    /// Opens the store at `location`, with the token keys from the environment: creates the
    /// SQLite file (or brings its schema up to date), or connects to PostgreSQL and applies
    /// its migrations. Errors never show a password.
    pub fn connect(location: &Location) -> Result<Opener, HostError> {
        Opener::connect_with_keys(location, crate::tokens::SecretKeys::from_env)
    }

    /// Like `connect`, with the keys for OAuth2 tokens from `keys` (called once).
    pub fn connect_with_keys(location: &Location, keys: impl Fn() -> crate::tokens::SecretKeys) -> Result<Opener, HostError> {
        match location {
            Location::Sqlite(path) => {
                // Created (or migrated) now, so that an unusable path fails at start.
                Database::open_with_keys(path, keys())?;
                Ok(Opener::Sqlite(path.clone()))
            }
            Location::Postgres { url, password_file } => {
                let pg = PgStore::connect_with_keys(url, password_file.as_deref(), keys()).map_err(|e| match e {
                    // Whatever the driver said, the URL's password is not repeated.
                    HostError::Storage(m) => HostError::Storage(scrub(&m, url)),
                    other => other,
                })?;
                Ok(Opener::Postgres(pg))
            }
        }
    }

    /// A handle on the store: a new connection to the SQLite file, or a view sharing the
    /// PostgreSQL pool.
    pub fn open(&self) -> Result<Store, HostError> {
        match self {
            Opener::Sqlite(path) => Ok(Store::Sqlite(Database::open(path)?)),
            Opener::Postgres(pg) => Ok(Store::Postgres(pg.clone())),
        }
    }

    /// "sqlite" or "postgres".
    pub fn kind(&self) -> &'static str {
        match self {
            Opener::Sqlite(_) => "sqlite",
            Opener::Postgres(_) => "postgres",
        }
    }

    /// The PostgreSQL store, when it is one (leases: `store::postgres::Leases`).
    pub fn postgres(&self) -> Option<&PgStore> {
        match self {
            Opener::Postgres(pg) => Some(pg),
            Opener::Sqlite(_) => None,
        }
    }

    /// The SQLite file, when it is one.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match self {
            Opener::Sqlite(p) => Some(p),
            Opener::Postgres(_) => None,
        }
    }
}

/// `message` with any password of `url` taken out (a driver error could quote a parameter).
fn scrub(message: &str, url: &str) -> String {
    let mut m = message.replace(url.trim(), &redact_url(url));
    if let Some(pw) = url::Url::parse(url.trim()).ok().and_then(|u| u.password().map(str::to_string)).filter(|p| p.len() >= 3) {
        m = m.replace(&pw, "***");
        let decoded = percent_decode(&pw);
        if decoded.len() >= 3 {
            m = m.replace(&decoded, "***");
        }
    }
    m
}

/// Percent-decodes a URL part.
fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes()).next().map(|(_, v)| v.into_owned()).unwrap_or_default()
}

/// A handle on the store (see the module doc). Not `Sync` (SQLite's connection): each task or
/// thread opens its own from the `Opener`.
pub enum Store {
    Sqlite(Database),
    Postgres(PgStore),
}

macro_rules! each {
    ($self:expr, $s:ident => $e:expr) => {
        match $self {
            Store::Sqlite($s) => $e,
            Store::Postgres($s) => $e,
        }
    };
}

impl Store {
    /// Opens the store at `location` and returns one handle (the CLI's one-shot commands).
    pub fn open(location: &Location) -> Result<Store, HostError> {
        Opener::connect(location)?.open()
    }

    /// "sqlite" or "postgres".
    pub fn kind(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "sqlite",
            Store::Postgres(_) => "postgres",
        }
    }

    /// The view whose writes that matter (message commits, sync-state saves, the sender's
    /// outbox transitions) carry `fence` and are refused with `HostError::LeaseLost` once its
    /// lease is lost (PostgreSQL, `PgStore::fenced`). SQLite has no leases (one node): the same
    /// handle.
    pub fn fenced(self, fence: Fence) -> Store {
        match self {
            Store::Sqlite(db) => Store::Sqlite(db),
            Store::Postgres(pg) => Store::Postgres(pg.fenced(fence)),
        }
    }

    /// The fence of this view (PostgreSQL only).
    pub fn fence(&self) -> Option<&Fence> {
        match self {
            Store::Sqlite(_) => None,
            Store::Postgres(pg) => pg.fence(),
        }
    }

    /// A sink storing one mailbox's deliveries (deduplicated, committed at `commit`).
    pub fn sink(&self, tenant: &str, mailbox: &str) -> StoreSink<'_> {
        match self {
            Store::Sqlite(db) => StoreSink::Sqlite(db.sink(tenant, mailbox)),
            Store::Postgres(pg) => StoreSink::Postgres(pg.sink(tenant, mailbox)),
        }
    }

    /// A stored message named explicitly (`db:17`, `mid:<...>`, `<...>`, `imap:...`,
    /// `pop3:...`); ambiguous references are refused. Returns (mailbox, raw bytes).
    pub fn find(&self, tenant: &str, reference: &str) -> Result<(String, Vec<u8>), HostError> {
        each!(self, s => s.find(tenant, reference))
    }

    /// Rows of a mailbox not yet reported as new, oldest first (`raw` only `with_raw`).
    pub fn unreported(&self, tenant: &str, mailbox: &str, with_raw: bool) -> Result<Vec<Unreported>, HostError> {
        each!(self, s => s.unreported(tenant, mailbox, with_raw))
    }

    /// Records that these rows were reported as new.
    pub fn mark_reported(&self, rows: &[i64]) -> Result<(), HostError> {
        each!(self, s => s.mark_reported(rows))
    }

    /// Every stored message of a mailbox, in insertion order (tests and tools).
    pub fn messages(&self, tenant: &str, mailbox: &str) -> Result<Vec<StoredMessage>, HostError> {
        each!(self, s => s.messages(tenant, mailbox))
    }

    /// Skipped notices of a mailbox: (server id, size, reason).
    pub fn skipped(&self, tenant: &str, mailbox: &str) -> Result<Vec<(String, u64, String)>, HostError> {
        each!(self, s => s.skipped(tenant, mailbox))
    }

    /// The SQLite database, when it is one.
    pub fn sqlite(&self) -> Option<&Database> {
        match self {
            Store::Sqlite(db) => Some(db),
            Store::Postgres(_) => None,
        }
    }

    /// The PostgreSQL store, when it is one.
    pub fn postgres(&self) -> Option<&PgStore> {
        match self {
            Store::Postgres(pg) => Some(pg),
            Store::Sqlite(_) => None,
        }
    }
}

impl SyncStateStore for Store {
    fn load(&self, tenant: &str, mailbox: &str) -> Result<Option<SavedState>, HostError> {
        each!(self, s => s.load(tenant, mailbox))
    }
    fn save(&self, tenant: &str, mailbox: &str, binding: &str, state: &[u8]) -> Result<(), HostError> {
        each!(self, s => s.save(tenant, mailbox, binding, state))
    }
    fn load_tokens(&self, tenant: &str, client: &str, username: &str) -> Result<Option<Tokens>, HostError> {
        each!(self, s => s.load_tokens(tenant, client, username))
    }
    fn save_tokens(&self, tenant: &str, client: &str, username: &str, tokens: &Tokens) -> Result<(), HostError> {
        each!(self, s => s.save_tokens(tenant, client, username, tokens))
    }
    fn token_storage_ready(&self) -> Result<(), HostError> {
        each!(self, s => s.token_storage_ready())
    }
}

impl MessageQuery for Store {
    fn list_messages(&self, tenant: &str, after: i64, limit: u32) -> Result<Vec<MessageSummary>, HostError> {
        each!(self, s => MessageQuery::list_messages(s, tenant, after, limit))
    }
    fn count_messages(&self, tenant: &str) -> Result<u64, HostError> {
        each!(self, s => MessageQuery::count_messages(s, tenant))
    }
    fn message_detail(&self, tenant: &str, id: i64) -> Result<Option<MessageDetail>, HostError> {
        each!(self, s => MessageQuery::message_detail(s, tenant, id))
    }
    fn message_raw(&self, tenant: &str, id: i64) -> Result<Option<Vec<u8>>, HostError> {
        each!(self, s => MessageQuery::message_raw(s, tenant, id))
    }
    fn find(&self, tenant: &str, reference: &str) -> Result<(String, Vec<u8>), HostError> {
        each!(self, s => s.find(tenant, reference))
    }
}

impl Outbox for Store {
    fn enqueue(&self, m: &NewOutbound, now_ms: i64) -> Result<OutboxRow, HostError> {
        each!(self, s => s.enqueue(m, now_ms))
    }
    fn take_due(&self, tenant: &str, queue: &str, limit: usize, now_ms: i64) -> Result<Vec<OutboxRow>, HostError> {
        each!(self, s => s.take_due(tenant, queue, limit, now_ms))
    }
    fn apply(&self, tenant: Option<&str>, id: &str, t: Transition, now_ms: i64) -> Result<OutboxRow, HostError> {
        each!(self, s => s.apply(tenant, id, t, now_ms))
    }
    fn ids_in(&self, tenant: &str, queue: &str, state: OutboxState) -> Result<Vec<String>, HostError> {
        each!(self, s => s.ids_in(tenant, queue, state))
    }
    fn list(&self, tenant: &str, queue: Option<&str>, state: Option<OutboxState>, limit: usize) -> Result<Vec<OutboxRow>, HostError> {
        each!(self, s => s.list(tenant, queue, state, limit))
    }
    fn get(&self, tenant: &str, id: &str, with_raw: bool) -> Result<Option<OutboxRow>, HostError> {
        each!(self, s => s.get(tenant, id, with_raw))
    }
    fn record_sent_copy(&self, id: &str, copy: &serde_json::Value, now_ms: i64) -> Result<(), HostError> {
        each!(self, s => s.record_sent_copy(id, copy, now_ms))
    }
    fn record_explanation(&self, id: &str, explanation: &Explanation) -> Result<(), HostError> {
        each!(self, s => s.record_explanation(id, explanation))
    }
    fn count(&self, tenant: &str, queue: &str, state: OutboxState) -> Result<StateCount, HostError> {
        each!(self, s => s.count(tenant, queue, state))
    }
}

impl Events for Store {
    fn next_undelivered(&self, tenant: &str, limit: usize) -> Result<Vec<Event>, HostError> {
        each!(self, s => s.next_undelivered(tenant, limit))
    }
    fn mark_delivered(&self, id: &str, now_ms: i64) -> Result<(), HostError> {
        each!(self, s => Events::mark_delivered(s, id, now_ms))
    }
    fn mark_failed(&self, id: &str, next_attempt_at_ms: i64) -> Result<(), HostError> {
        each!(self, s => s.mark_failed(id, next_attempt_at_ms))
    }
    fn mark_dead(&self, id: &str) -> Result<(), HostError> {
        each!(self, s => s.mark_dead(id))
    }
    fn list_after(&self, tenant: &str, after_id: Option<&str>, limit: usize) -> Result<Vec<Event>, HostError> {
        each!(self, s => s.list_after(tenant, after_id, limit))
    }
}

/// A sink of the selected store (`Store::sink`).
pub enum StoreSink<'a> {
    Sqlite(DbSink<'a>),
    Postgres(PgSink),
}

impl StoreSink<'_> {
    /// Counts since the sink was made.
    pub fn stats(&self) -> SinkStats {
        match self {
            StoreSink::Sqlite(s) => s.stats,
            StoreSink::Postgres(s) => s.stats,
        }
    }

    /// What became of each delivery since the previous commit (after each `commit`).
    pub fn results(&self) -> &[Delivered] {
        match self {
            StoreSink::Sqlite(s) => &s.results,
            StoreSink::Postgres(s) => &s.results,
        }
    }
}

macro_rules! each_sink {
    ($self:expr, $s:ident => $e:expr) => {
        match $self {
            StoreSink::Sqlite($s) => $e,
            StoreSink::Postgres($s) => $e,
        }
    };
}

impl MessageSink for StoreSink<'_> {
    fn deliver(&mut self, message: FetchedMessage) -> Result<(), HostError> {
        each_sink!(self, s => s.deliver(message))
    }
    fn skipped(&mut self, notice: SkippedMessage) -> Result<(), HostError> {
        each_sink!(self, s => s.skipped(notice))
    }
    fn commit(&mut self) -> Result<(), HostError> {
        each_sink!(self, s => s.commit())
    }
    fn progress(&mut self, report: StepReport) {
        each_sink!(self, s => s.progress(report))
    }
    fn source(&mut self, server: &str) {
        each_sink!(self, s => s.source(server))
    }
    fn warning(&mut self, en: &str, de: &str) {
        each_sink!(self, s => s.warning(en, de))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_postgres_url_selects_postgres_and_anything_else_is_an_sqlite_path() {
        for url in ["postgres://u@127.0.0.1:5432/db", "postgresql://u@localhost/db", "POSTGRES://u@h/db", "  postgres://h/db"] {
            assert_eq!(Location::parse(url, Some("/pw".into())).kind(), "postgres", "{url}");
        }
        for path in ["/var/lib/mailplug.sqlite3", "postgres.sqlite3", "./postgres:/x", "mysql://h/db", ""] {
            assert_eq!(Location::parse(path, None), Location::Sqlite(PathBuf::from(path)), "{path}");
        }
        match Location::parse("postgres://u@h/db", Some("/run/pw".into())) {
            Location::Postgres { password_file, .. } => assert_eq!(password_file, Some(PathBuf::from("/run/pw"))),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_password_in_the_url_is_never_shown() {
        let l = Location::parse("postgres://mail:s3cr%40t-pw@db.example:5432/mailplug?sslmode=require", None);
        assert!(l.password_in_url());
        for shown in [l.to_string(), format!("{l:?}")] {
            assert!(!shown.contains("s3cr"), "{shown}");
            assert!(shown.contains("mail:***@db.example:5432/mailplug"), "{shown}");
            assert!(shown.contains("sslmode=require"), "{shown}");
        }
        let q = redact_url("postgres://mail@h/db?password=hunter22&sslmode=require");
        assert!(!q.contains("hunter22") && q.contains("password=***") && q.contains("sslmode=require"), "{q}");
        assert!(!redact_url("postgres://u:pw@[bad").contains("pw"));
        assert!(!Location::parse("postgres://mail@h/db", None).password_in_url());
        let m = scrub("cannot connect with postgres://mail:s3cr%40t-pw@h/db: s3cr@t-pw rejected, s3cr%40t-pw", "postgres://mail:s3cr%40t-pw@h/db");
        assert!(!m.contains("s3cr"), "{m}");
    }

    #[test]
    fn the_sqlite_store_is_opened_through_the_same_handle() {
        let dir = std::env::temp_dir().join(format!("mailplug-select-{}", std::process::id()));
        let path = dir.join("s.sqlite3");
        let opener = Opener::connect(&Location::sqlite(&path)).unwrap();
        assert_eq!(opener.kind(), "sqlite");
        let store = opener.open().unwrap();
        store.save("t", "m", "imap:h:1:u", b"state").unwrap();
        // A fenced view of SQLite is the same store.
        let fence = Fence { resource: "mailbox:t/m".into(), token: 7 };
        let store = store.fenced(fence);
        assert!(store.fence().is_none());
        assert_eq!(opener.open().unwrap().load("t", "m").unwrap().unwrap().state, b"state");
        assert_eq!(MessageQuery::count_messages(&store, "t").unwrap(), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
