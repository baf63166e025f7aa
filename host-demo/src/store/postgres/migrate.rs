//! Versioned schema migrations, applied at start: `mailplug_schema` records each version
//! applied; the versions above it run in one transaction under an advisory lock, so nodes
//! starting together apply each once and a failed migration leaves the previous version whole.
//! A database of a newer version than this code knows is refused (an older node must not
//! write a layout it does not understand).

use super::{pg_err, Db};
use crate::error::HostError;

/// The advisory lock key of migrations (any fixed number; "mplgschm").
const LOCK: i64 = 0x6d70_6c67_7363_686d;

/// (version, what it does, SQL). Append only: an applied migration never changes.
const MIGRATIONS: &[(i32, &str, &str)] = &[(
    1,
    "messages, attachments, skipped, sync state, OAuth tokens, outbox, events, leases",
    r#"
CREATE TABLE messages (
    id                   BIGSERIAL PRIMARY KEY,
    tenant               TEXT NOT NULL,
    mailbox              TEXT NOT NULL,
    -- The server the message came from: "protocol:host:port:user" (store::binding).
    source               TEXT NOT NULL,
    server_id            TEXT NOT NULL,
    folder               TEXT NOT NULL,
    message_id           TEXT NOT NULL,
    message_id_synthetic BOOLEAN NOT NULL,
    -- SHA-256 of raw, hex.
    content_hash         TEXT NOT NULL,
    mid_collision        BOOLEAN NOT NULL DEFAULT false,
    reported             BOOLEAN NOT NULL DEFAULT false,
    subject              TEXT,
    from_addr            TEXT,
    date_ms              BIGINT,
    classification       TEXT NOT NULL,
    parse_error          TEXT,
    text_body            TEXT,
    html_body            TEXT,
    size                 BIGINT NOT NULL,
    raw                  BYTEA NOT NULL,
    stored_at_ms         BIGINT NOT NULL,
    -- The fencing token of the commit that stored it (NULL: written without a lease).
    token                BIGINT,
    UNIQUE (tenant, mailbox, source, server_id)
);
CREATE INDEX messages_message_id ON messages (tenant, mailbox, message_id);
CREATE INDEX messages_unreported ON messages (tenant, mailbox) WHERE NOT reported;
CREATE INDEX messages_by_tenant ON messages (tenant, id);
CREATE TABLE attachments (
    message     BIGINT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    position    INTEGER NOT NULL,
    name        TEXT,
    media_type  TEXT NOT NULL,
    size        BIGINT NOT NULL,
    content_id  TEXT,
    PRIMARY KEY (message, position)
);
CREATE TABLE skipped (
    tenant      TEXT NOT NULL,
    mailbox     TEXT NOT NULL,
    server_id   TEXT NOT NULL,
    folder      TEXT NOT NULL,
    size        BIGINT NOT NULL,
    reason      TEXT NOT NULL,
    seq         BIGSERIAL,
    PRIMARY KEY (tenant, mailbox, server_id)
);
CREATE TABLE oauth_tokens (
    tenant        TEXT NOT NULL,
    client        TEXT NOT NULL,
    username      TEXT NOT NULL,
    -- Encrypted: "mpenc1:<key id>:<base64url>" (tenant::tokens).
    access_token  TEXT NOT NULL,
    refresh_token TEXT,
    expires_at_ms BIGINT,
    scopes        TEXT NOT NULL,
    account       TEXT,
    updated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (tenant, client, username)
);
CREATE TABLE sync_state (
    tenant   TEXT NOT NULL,
    mailbox  TEXT NOT NULL,
    state    BYTEA NOT NULL,
    binding  TEXT,
    -- The fencing token of the save (NULL: saved without a lease); a save under an older
    -- token never replaces it.
    token    BIGINT,
    PRIMARY KEY (tenant, mailbox)
);
CREATE TABLE outbox (
    seq                BIGSERIAL PRIMARY KEY,
    id                 TEXT NOT NULL UNIQUE,
    tenant             TEXT NOT NULL,
    queue              TEXT NOT NULL,
    message_id         TEXT NOT NULL,
    envelope           TEXT NOT NULL,
    raw                BYTEA NOT NULL,
    size               BIGINT NOT NULL,
    state              TEXT NOT NULL,
    attempts           INTEGER NOT NULL DEFAULT 0,
    next_attempt_at_ms BIGINT NOT NULL,
    created_at_ms      BIGINT NOT NULL,
    updated_at_ms      BIGINT NOT NULL,
    last_reply         TEXT,
    explanation_en     TEXT,
    explanation_de     TEXT,
    max_age_ms         BIGINT NOT NULL,
    save_copy          TEXT,
    sent_copy          TEXT,
    -- The fencing token of the last sender transition (NULL: none yet, or no lease).
    token              BIGINT
);
CREATE INDEX outbox_due ON outbox (tenant, queue, state, next_attempt_at_ms);
CREATE TABLE events (
    -- Commit order within a tenant (events::append numbers under the tenant's lock).
    seq                BIGINT NOT NULL UNIQUE,
    id                 TEXT PRIMARY KEY,
    tenant             TEXT NOT NULL,
    kind               TEXT NOT NULL,
    payload            TEXT NOT NULL,
    created_at_ms      BIGINT NOT NULL,
    delivered_at_ms    BIGINT,
    attempts           INTEGER NOT NULL DEFAULT 0,
    next_attempt_at_ms BIGINT,
    dead               BOOLEAN NOT NULL DEFAULT false
);
CREATE SEQUENCE events_seq;
CREATE INDEX events_by_tenant ON events (tenant, seq);
CREATE INDEX events_undelivered ON events (tenant, seq) WHERE delivered_at_ms IS NULL AND NOT dead;
CREATE TABLE leases (
    -- "mailbox:<tenant>/<mailbox>", "queue:<tenant>/<queue>", ... (lease::*_resource).
    resource     TEXT PRIMARY KEY,
    -- The node holding it (NULL: released).
    owner        TEXT,
    -- From lease_tokens at each new owner: strictly increasing, never reused.
    token        BIGINT NOT NULL,
    expires_at   TIMESTAMPTZ NOT NULL,
    acquired_at  TIMESTAMPTZ,
    renewed_at   TIMESTAMPTZ
);
CREATE SEQUENCE lease_tokens;
"#,
)];

/// The newest version this code knows.
pub(super) fn current() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}

/// Brings the schema to `current()`.
pub(super) async fn migrate(db: &Db) -> Result<(), HostError> {
    let mut c = db.client().await?;
    let tx = c.transaction().await.map_err(pg_err("migrating the schema"))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK]).await.map_err(pg_err("migrating the schema"))?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS mailplug_schema (
            version     INTEGER PRIMARY KEY,
            description TEXT NOT NULL,
            applied_at  TIMESTAMPTZ NOT NULL DEFAULT now()
        )",
    )
    .await
    .map_err(pg_err("migrating the schema"))?;
    let have: i32 = tx
        .query_one("SELECT COALESCE(MAX(version), 0) FROM mailplug_schema", &[])
        .await
        .map_err(pg_err("reading the schema version"))?
        .get(0);
    if have > current() {
        return Err(HostError::Storage(format!(
            "the PostgreSQL database has schema version {have}, written by a newer mailplug; this one knows up to {}: \
             update this node / die PostgreSQL-Datenbank hat Schemaversion {have} einer neueren mailplug-Version: \
             diesen Knoten aktualisieren",
            current()
        )));
    }
    for (version, description, sql) in MIGRATIONS.iter().filter(|m| m.0 > have) {
        tx.batch_execute(sql).await.map_err(pg_err("migrating the schema"))?;
        tx.execute("INSERT INTO mailplug_schema (version, description) VALUES ($1, $2)", &[version, description])
            .await
            .map_err(pg_err("migrating the schema"))?;
    }
    tx.commit().await.map_err(pg_err("migrating the schema"))
}

pub(super) async fn version(db: &Db) -> Result<i32, HostError> {
    let c = db.client().await?;
    Ok(c.query_one("SELECT COALESCE(MAX(version), 0) FROM mailplug_schema", &[]).await.map_err(pg_err("reading the schema version"))?.get(0))
}
