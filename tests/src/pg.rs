//! The test PostgreSQL (tests/rig/postgres/up.sh writes $MAILPLUG_RIG_DIR/postgres.env):
//! shared by the PostgreSQL store tests, the serve-on-PostgreSQL tests and the scale-out test.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

/// (URL, password file) from postgres.env, or None (the caller skips, saying why). Under
/// tests/run.sh (`MAILPLUG_REQUIRE_PG` set) a missing cluster is a failure, not a skip.
pub fn pg_env() -> Option<(String, PathBuf)> {
    let dir = std::env::var("MAILPLUG_RIG_DIR").unwrap_or_else(|_| "/tmp/mailplug-rig".into());
    let path = PathBuf::from(dir).join("postgres.env");
    let Ok(text) = std::fs::read_to_string(&path) else {
        assert!(
            std::env::var_os("MAILPLUG_REQUIRE_PG").is_none(),
            "{} is missing although MAILPLUG_REQUIRE_PG is set (tests/setup.sh starts tests/rig/postgres/up.sh)",
            path.display()
        );
        eprintln!("SKIPPED: {} is missing: start the test PostgreSQL with `sudo tests/rig/postgres/up.sh`", path.display());
        return None;
    };
    let get = |k: &str| text.lines().find_map(|l| l.strip_prefix(&format!("{k}="))).map(|v| v.trim().to_string());
    Some((
        get("MAILPLUG_PG_URL").expect("postgres.env has MAILPLUG_PG_URL"),
        PathBuf::from(get("MAILPLUG_PG_PASSWORD_FILE").expect("postgres.env has MAILPLUG_PG_PASSWORD_FILE")),
    ))
}

/// A name no other test (or earlier run) uses: for tenants, databases and files.
pub fn unique(what: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{what}-{}-{t:x}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

// C: a schema of its own for tests that count nodes (all nodes of one store count as one set).

/// The test PostgreSQL's URL for a new, empty schema named after `what` (made now): a store
/// opened with it sees only its own tables, leases and nodes. None when there is no test
/// PostgreSQL (the caller skips).
pub fn pg_schema(what: &str) -> Option<(String, PathBuf)> {
    let (url, pw) = pg_env()?;
    let schema = unique(what).replace('-', "_").to_ascii_lowercase();
    let out = std::process::Command::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", &url, "-c", &format!("CREATE SCHEMA {schema}")])
        .env("PGPASSWORD", std::fs::read_to_string(&pw).expect("the password file").trim())
        .output()
        .expect("psql runs");
    assert!(out.status.success(), "creating schema {schema}: {}", String::from_utf8_lossy(&out.stderr));
    let sep = if url.contains('?') { '&' } else { '?' };
    // The store hands the URL's options to the driver as written ("-c%20search_path%3D..."
    // works too; store::postgres::tls::tests::other_parameters_reach_the_driver_as_written).
    Some((format!("{url}{sep}options=-csearch_path%3D{schema}"), pw))
}

/// Drops the schema of a URL from `pg_schema` with everything in it (a test's tables, leases
/// and nodes); errors are ignored (the test's result does not depend on it).
pub fn drop_schema(url: &str, pw: &std::path::Path) {
    let Some(schema) = url.rsplit("search_path%3D").next().filter(|s| !s.contains('/')) else { return };
    if !schema.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return;
    }
    let Ok(password) = std::fs::read_to_string(pw) else { return };
    let _ = std::process::Command::new("psql")
        .args(["-X", "-q", url, "-c", &format!("DROP SCHEMA IF EXISTS {schema} CASCADE")])
        .env("PGPASSWORD", password.trim())
        .output();
}

/// Polls `acquire` until it succeeds (the other owner's lease expired), at most 10 s.
pub fn acquire_when_free(
    pg: &mailplug_host::store::postgres::PgStore,
    resource: &str,
    owner: &str,
    ttl: std::time::Duration,
) -> mailplug_host::store::postgres::Lease {
    use mailplug_host::store::postgres::Leases;
    let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let Some(l) = pg.acquire(resource, owner, ttl).unwrap() {
            return l;
        }
        assert!(std::time::Instant::now() < end, "{owner} never got {resource}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Whether `e` says that `resource`'s lease was lost to `holder`.
pub fn is_lease_lost(e: &mailplug_host::error::HostError, resource: &str, holder: Option<&str>) -> bool {
    matches!(e, mailplug_host::error::HostError::LeaseLost { resource: r, holder: h, .. } if r == resource && h.as_deref() == holder)
}
