//! Reading messages back (`MessageQuery`, as the API and the CLI do with SQLite) and the OAuth2
//! tokens, encrypted exactly as in the SQLite store (`tenant::tokens`: XChaCha20-Poly1305 under
//! the operator's key, the row and column as authenticated data, the same stored format).

use zeroize::Zeroizing;

use super::{pg_err, Db, PgStore};
use crate::engine::Tokens;
use crate::error::HostError;
use crate::store::sqlite::{MessageDetail, MessageSummary, StoredAttachment, StoredMessage, Unreported};
use crate::store::{MessageQuery, MessageRef, RefCandidate};
use crate::tokens::aad;

const SUMMARY: &str = "id, mailbox, folder, server_id, message_id, from_addr, subject, date_ms, size, stored_at_ms";

fn summary(r: &tokio_postgres::Row) -> MessageSummary {
    MessageSummary {
        id: r.get(0),
        mailbox: r.get(1),
        folder: r.get(2),
        server_id: r.get(3),
        message_id: r.get(4),
        from: r.get(5),
        subject: r.get(6),
        date_ms: r.get(7),
        size: r.get::<_, i64>(8) as u64,
        stored_at_ms: r.get(9),
    }
}

impl MessageQuery for PgStore {
    fn list_messages(&self, tenant: &str, after: i64, limit: u32) -> Result<Vec<MessageSummary>, HostError> {
        let tenant = tenant.to_string();
        self.wait(|db| async move {
            let c = db.client().await?;
            let rows = c
                .query(&format!("SELECT {SUMMARY} FROM messages WHERE tenant = $1 AND id > $2 ORDER BY id LIMIT $3"), &[&tenant, &after, &i64::from(limit)])
                .await
                .map_err(pg_err("listing messages"))?;
            Ok(rows.iter().map(summary).collect())
        })
    }

    fn count_messages(&self, tenant: &str) -> Result<u64, HostError> {
        let tenant = tenant.to_string();
        self.wait(|db| async move {
            let c = db.client().await?;
            let n: i64 = c.query_one("SELECT COUNT(*) FROM messages WHERE tenant = $1", &[&tenant]).await.map_err(pg_err("counting messages"))?.get(0);
            Ok(n as u64)
        })
    }

    fn message_detail(&self, tenant: &str, id: i64) -> Result<Option<MessageDetail>, HostError> {
        let tenant = tenant.to_string();
        self.wait(|db| async move {
            let c = db.client().await?;
            let Some(r) = c
                .query_opt(
                    &format!(
                        "SELECT {SUMMARY}, classification, parse_error, message_id_synthetic, mid_collision, text_body, html_body
                         FROM messages WHERE tenant = $1 AND id = $2"
                    ),
                    &[&tenant, &id],
                )
                .await
                .map_err(pg_err("reading a message"))?
            else {
                return Ok(None);
            };
            let attachments = c
                .query("SELECT name, media_type, size, content_id FROM attachments WHERE message = $1 ORDER BY position", &[&id])
                .await
                .map_err(pg_err("reading attachments"))?
                .iter()
                .map(|a| StoredAttachment { name: a.get(0), media_type: a.get(1), size: a.get::<_, i64>(2) as u64, content_id: a.get(3) })
                .collect();
            Ok(Some(MessageDetail {
                summary: summary(&r),
                classification: r.get(10),
                parse_error: r.get(11),
                message_id_synthetic: r.get(12),
                message_id_collision: r.get(13),
                text_body: r.get(14),
                html_body: r.get(15),
                attachments,
            }))
        })
    }

    fn message_raw(&self, tenant: &str, id: i64) -> Result<Option<Vec<u8>>, HostError> {
        let tenant = tenant.to_string();
        self.wait(|db| async move {
            let c = db.client().await?;
            let r = c.query_opt("SELECT raw FROM messages WHERE tenant = $1 AND id = $2", &[&tenant, &id]).await.map_err(pg_err("reading a message"))?;
            Ok(r.map(|r| r.get(0)))
        })
    }

    fn find(&self, tenant: &str, reference: &str) -> Result<(String, Vec<u8>), HostError> {
        PgStore::find(self, tenant, reference)
    }
}

impl PgStore {
    /// Every stored message of a mailbox, in insertion order (tests and tools).
    pub fn messages(&self, tenant: &str, mailbox: &str) -> Result<Vec<StoredMessage>, HostError> {
        let (tenant, mailbox) = (tenant.to_string(), mailbox.to_string());
        self.wait(|db| async move {
            let c = db.client().await?;
            let rows = c
                .query(
                    "SELECT server_id, folder, message_id, subject, classification, parse_error, raw,
                            (SELECT COUNT(*) FROM attachments a WHERE a.message = m.id), id, mid_collision, reported
                     FROM messages m WHERE tenant = $1 AND mailbox = $2 ORDER BY id",
                    &[&tenant, &mailbox],
                )
                .await
                .map_err(pg_err("reading messages"))?;
            Ok(rows
                .iter()
                .map(|r| StoredMessage {
                    server_id: r.get(0),
                    folder: r.get(1),
                    message_id: r.get(2),
                    subject: r.get(3),
                    classification: r.get(4),
                    parse_error: r.get(5),
                    raw: r.get(6),
                    attachments: r.get::<_, i64>(7) as usize,
                    row: r.get(8),
                    collision: r.get(9),
                    reported: r.get(10),
                })
                .collect())
        })
    }

    /// A stored message named explicitly, as `Database::find` (the same references and
    /// errors): (mailbox, raw bytes).
    pub fn find(&self, tenant: &str, reference: &str) -> Result<(String, Vec<u8>), HostError> {
        let r = MessageRef::parse(reference)?;
        let (tenant, reference) = (tenant.to_string(), reference.trim().to_string());
        self.wait(|db| async move {
            let c = db.client().await?;
            let sql = format!(
                "SELECT id, mailbox, server_id, from_addr, subject FROM messages WHERE tenant = $1 AND {} = $2 ORDER BY id LIMIT 11",
                r.column()
            );
            let rows = match &r {
                MessageRef::Id(id) => c.query(&sql, &[&tenant, id]).await,
                MessageRef::MessageId(v) | MessageRef::ServerId(v) => c.query(&sql, &[&tenant, v]).await,
            }
            .map_err(pg_err("finding a message"))?;
            let found: Vec<RefCandidate> = rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4))).collect();
            match found.as_slice() {
                [(id, mailbox, ..)] => {
                    let raw = c
                        .query_opt("SELECT raw FROM messages WHERE id = $1", &[id])
                        .await
                        .map_err(pg_err("reading a message"))?
                        .ok_or_else(|| crate::store::reference_error(&reference, &tenant, &[]))?
                        .get(0);
                    Ok((mailbox.clone(), raw))
                }
                other => Err(crate::store::reference_error(&reference, &tenant, other)),
            }
        })
    }

    /// Rows of a mailbox not yet reported as new, oldest first, as `Database::unreported`
    /// (`raw` only `with_raw`, else empty).
    pub fn unreported(&self, tenant: &str, mailbox: &str, with_raw: bool) -> Result<Vec<Unreported>, HostError> {
        let (tenant, mailbox) = (tenant.to_string(), mailbox.to_string());
        self.wait(|db| async move {
            let c = db.client().await?;
            let rows = c
                .query(
                    "SELECT id, server_id, folder, size, from_addr, subject, classification, parse_error, mid_collision,
                            CASE WHEN $3 THEN raw ELSE ''::bytea END
                     FROM messages WHERE tenant = $1 AND mailbox = $2 AND NOT reported ORDER BY id",
                    &[&tenant, &mailbox, &with_raw],
                )
                .await
                .map_err(pg_err("reading unreported messages"))?;
            Ok(rows
                .iter()
                .map(|r| Unreported {
                    row: r.get(0),
                    server_id: r.get(1),
                    folder: r.get(2),
                    size: r.get::<_, i64>(3) as u64,
                    from: r.get(4),
                    subject: r.get(5),
                    classification: r.get(6),
                    parse_error: r.get(7),
                    collision: r.get(8),
                    raw: r.get(9),
                })
                .collect())
        })
    }

    /// Records that these rows were reported as new.
    pub fn mark_reported(&self, rows: &[i64]) -> Result<(), HostError> {
        let rows = rows.to_vec();
        self.wait(|db| async move {
            let c = db.client().await?;
            c.execute("UPDATE messages SET reported = true WHERE id = ANY($1)", &[&rows]).await.map_err(pg_err("marking messages reported"))?;
            Ok(())
        })
    }

    /// Skipped notices of a mailbox: (server id, size, reason).
    pub fn skipped(&self, tenant: &str, mailbox: &str) -> Result<Vec<(String, u64, String)>, HostError> {
        let (tenant, mailbox) = (tenant.to_string(), mailbox.to_string());
        self.wait(|db| async move {
            let c = db.client().await?;
            let rows = c
                .query("SELECT server_id, size, reason FROM skipped WHERE tenant = $1 AND mailbox = $2 ORDER BY seq", &[&tenant, &mailbox])
                .await
                .map_err(pg_err("reading skipped"))?;
            Ok(rows.iter().map(|r| (r.get(0), r.get::<_, i64>(1) as u64, r.get(2))).collect())
        })
    }
}

/// Reads the tokens of one account; a row under the old key (or in plaintext) is rewritten
/// under the current key right away.
pub(super) async fn load_tokens(db: &Db, tenant: &str, client: &str, username: &str) -> Result<Option<Tokens>, HostError> {
    let c = db.client().await?;
    let row = c
        .query_opt(
            "SELECT access_token, refresh_token, expires_at_ms, scopes, account FROM oauth_tokens
             WHERE tenant = $1 AND client = $2 AND username = $3",
            &[&tenant, &client, &username],
        )
        .await
        .map_err(pg_err("reading OAuth2 tokens"))?;
    let Some(r) = row else { return Ok(None) };
    let access = Zeroizing::new(r.get::<_, String>(0));
    let refresh = r.get::<_, Option<String>>(1).map(Zeroizing::new);
    let keys = &db.keys;
    let (access_token, mut rewrite) = keys.open(&aad(tenant, client, username, "access_token"), &access)?;
    let refresh_token = match refresh {
        Some(v) => {
            let (plain, again) = keys.open(&aad(tenant, client, username, "refresh_token"), &v)?;
            rewrite |= again;
            Some(plain)
        }
        None => None,
    };
    let scopes: String = r.get(3);
    let tokens = Tokens {
        access_token,
        refresh_token,
        expires_at: r.get::<_, Option<i64>>(2).map(|v| v as u64),
        scopes: scopes.split(' ').filter(|s| !s.is_empty()).map(str::to_string).collect(),
        account: r.get(4),
    };
    if rewrite {
        save_tokens(db, &c, tenant, client, username, &tokens).await?;
    }
    Ok(Some(tokens))
}

/// Replaces the tokens of one account, encrypted under the current key.
pub(super) async fn save_tokens(
    db: &Db,
    c: &impl deadpool_postgres::GenericClient,
    tenant: &str,
    client: &str,
    username: &str,
    t: &Tokens,
) -> Result<(), HostError> {
    let keys = &db.keys;
    let access = keys.seal(&aad(tenant, client, username, "access_token"), &t.access_token)?;
    let refresh = t.refresh_token.as_deref().map(|r| keys.seal(&aad(tenant, client, username, "refresh_token"), r)).transpose()?;
    c.execute(
        "INSERT INTO oauth_tokens (tenant, client, username, access_token, refresh_token, expires_at_ms, scopes, account, updated_at_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (tenant, client, username) DO UPDATE SET access_token = excluded.access_token,
           refresh_token = excluded.refresh_token, expires_at_ms = excluded.expires_at_ms,
           scopes = excluded.scopes, account = excluded.account, updated_at_ms = excluded.updated_at_ms",
        &[
            &tenant,
            &client,
            &username,
            &access,
            &refresh,
            &t.expires_at.map(|v| v as i64),
            &t.scopes.join(" "),
            &t.account,
            &(crate::driver::now_ms() as i64),
        ],
    )
    .await
    .map_err(pg_err("saving OAuth2 tokens"))?;
    Ok(())
}
