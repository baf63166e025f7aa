//! Leases with fencing tokens: each mailbox and each outbound queue is worked on by at most one
//! node at a time.
//!
//! A lease is a row of `leases`: resource, owner, expiry and a fencing token. Time is the
//! database's (`clock_timestamp()`), so the nodes' clocks do not matter. Taking a lease locks
//! its row with `SELECT ... FOR UPDATE SKIP LOCKED`: of nodes racing for one resource, one gets
//! the row and the others skip it at once (no waiting, no two owners). A new owner gets a new
//! token from the `lease_tokens` sequence, so tokens only grow and are never reused, even
//! across resources or a deleted row. The owner renews before expiry; a node that stops
//! renewing (killed, paused, cut off) loses the lease at expiry and another node takes it.
//!
//! Fencing: a write made under a lease (`PgStore::fenced`) first locks the lease row `FOR
//! SHARE` in its own transaction and checks that the token is still the row's and the lease
//! has not expired; else it is refused with `HostError::LeaseLost` and nothing is written. The
//! share lock lasts until the write commits, so no takeover can slip in between the check and
//! the commit: every write of an old owner is either committed before the new owner took the
//! lease (and so seen by it) or refused. A paused node that wakes up after losing its lease
//! cannot store, save a sync state or change the outbox.

use std::time::Duration;

use super::{pg_err, PgStore};
use crate::error::HostError;

/// The resource name of a mailbox's lease.
pub fn mailbox_resource(tenant: &str, mailbox: &str) -> String {
    format!("mailbox:{tenant}/{mailbox}")
}

/// The resource name of an outbound queue's lease.
pub fn queue_resource(tenant: &str, queue: &str) -> String {
    format!("queue:{tenant}/{queue}")
}

/// The resource name of a tenant's webhook deliverer's lease.
pub fn webhook_resource(tenant: &str) -> String {
    format!("webhook:{tenant}")
}

/// The resource name of a node's heartbeat lease (`Leases::heartbeat`).
pub fn node_resource(node: &str) -> String {
    format!("node:{node}")
}

/// A lease held by this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub resource: String,
    pub owner: String,
    /// The fencing token: larger for every new owner of any resource.
    pub token: i64,
    /// The database's time at which it expires unless renewed (ms since 1970).
    pub expires_at_ms: i64,
}

impl Lease {
    /// The fence that writes made under this lease carry (`PgStore::fenced`).
    pub fn fence(&self) -> Fence {
        Fence { resource: self.resource.clone(), token: self.token }
    }
}

/// A lease row as listed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LeaseInfo {
    pub resource: String,
    /// None when released.
    pub owner: Option<String>,
    pub token: i64,
    pub expires_at_ms: i64,
    /// Held and not expired.
    pub live: bool,
}

/// What a fenced write carries: the resource and the token of the lease it is made under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub resource: String,
    pub token: i64,
}

impl Fence {
    /// Inside a write's transaction: locks the lease row (`FOR SHARE`, until the commit) and
    /// fails with `LeaseLost` unless this token still holds an unexpired lease.
    pub(crate) async fn check(&self, tx: &deadpool_postgres::Transaction<'_>) -> Result<(), HostError> {
        let row = tx
            .query_opt(
                "SELECT owner, token, expires_at > clock_timestamp() FROM leases WHERE resource = $1 FOR SHARE",
                &[&self.resource],
            )
            .await
            .map_err(pg_err("checking a lease"))?;
        match row {
            Some(r) if r.get::<_, i64>(1) == self.token && r.get::<_, bool>(2) && r.get::<_, Option<String>>(0).is_some() => Ok(()),
            Some(r) if r.get::<_, i64>(1) != self.token => Err(self.lost(r.get(0))),
            _ => Err(self.lost(None)),
        }
    }

    /// The refusal for this fence (`holder`: the node that holds the resource now, if known).
    pub(crate) fn lost(&self, holder: Option<String>) -> HostError {
        HostError::LeaseLost { resource: self.resource.clone(), token: self.token, holder }
    }
}

/// Leases as a store keeps them.
pub trait Leases {
    /// Takes the lease on `resource` for `owner` for `ttl`: a free, released or expired lease
    /// gets a new token; `owner`'s own live lease is extended with its token kept. None when
    /// another owner holds it, or another node is taking it or writing under it right now.
    fn acquire(&self, resource: &str, owner: &str, ttl: Duration) -> Result<Option<Lease>, HostError>;
    /// Takes up to `limit` of `resources` that are free, released or expired (in name order),
    /// skipping those other nodes hold or are taking: how a node claims its share of work.
    fn acquire_free(&self, resources: &[String], owner: &str, ttl: Duration, limit: usize) -> Result<Vec<Lease>, HostError>;
    /// Extends a live lease; `LeaseLost` when it expired or another owner has it.
    fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Lease, HostError>;
    /// Gives the lease up (it expires now, so another node may take it at once). Releasing a
    /// lease already lost does nothing.
    fn release(&self, lease: &Lease) -> Result<(), HostError>;
    /// The leases whose resource starts with `prefix`, by name.
    fn list_leases(&self, prefix: &str) -> Result<Vec<LeaseInfo>, HostError>;
    /// Extends all of `leases` in one statement (how a node's renewer keeps what it holds):
    /// which were renewed (with their new expiry) and which were lost (expired, or another
    /// node holds them now: with that node, when known).
    fn renew_all(&self, leases: &[Lease], ttl: Duration) -> Result<Renewal, HostError>;
    /// Takes or extends the heartbeat lease `node:<node>` for `ttl` and counts the live nodes
    /// (unexpired heartbeats, this one included): what a node's fair share is computed from.
    /// Heartbeats expired for more than a day are deleted.
    fn heartbeat(&self, node: &str, ttl: Duration) -> Result<Heartbeat, HostError>;
}

/// What `Leases::renew_all` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Renewal {
    /// Renewed, with the new expiry.
    pub renewed: Vec<Lease>,
    /// Lost, with the node that holds the resource now (None: nobody, or unknown).
    pub lost: Vec<(Lease, Option<String>)>,
}

/// What `Leases::heartbeat` returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    /// The node's own heartbeat lease (released when the node stops).
    pub lease: Lease,
    /// Nodes with a live heartbeat, this one included.
    pub live_nodes: usize,
}

fn ttl_ms(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1)
}

const EXPIRES_MS: &str = "(extract(epoch from expires_at) * 1000)::bigint";

impl Leases for PgStore {
    fn acquire(&self, resource: &str, owner: &str, ttl: Duration) -> Result<Option<Lease>, HostError> {
        let (resource, owner, ttl) = (resource.to_string(), owner.to_string(), ttl_ms(ttl));
        self.wait(|db| async move {
            let mut c = db.client().await?;
            let tx = c.transaction().await.map_err(pg_err("taking a lease"))?;
            tx.execute(
                "INSERT INTO leases (resource, owner, token, expires_at) VALUES ($1, NULL, 0, '-infinity') ON CONFLICT DO NOTHING",
                &[&resource],
            )
            .await
            .map_err(pg_err("taking a lease"))?;
            let row = tx
                .query_opt(
                    "SELECT owner, expires_at > clock_timestamp() FROM leases WHERE resource = $1 FOR UPDATE SKIP LOCKED",
                    &[&resource],
                )
                .await
                .map_err(pg_err("taking a lease"))?;
            let Some(row) = row else { return Ok(None) };
            let (holder, live): (Option<String>, bool) = (row.get(0), row.get(1));
            let sql = match (holder.as_deref(), live) {
                (Some(h), true) if h != owner => return Ok(None),
                // Our own live lease: extended, same token.
                (Some(_), true) => format!(
                    "UPDATE leases SET expires_at = clock_timestamp() + $3 * interval '1 millisecond', renewed_at = clock_timestamp()
                     WHERE resource = $1 AND owner = $2 RETURNING token, {EXPIRES_MS}"
                ),
                _ => format!(
                    "UPDATE leases SET owner = $2, token = nextval('lease_tokens'),
                        expires_at = clock_timestamp() + $3 * interval '1 millisecond', acquired_at = clock_timestamp(), renewed_at = NULL
                     WHERE resource = $1 RETURNING token, {EXPIRES_MS}"
                ),
            };
            let r = tx.query_one(&sql, &[&resource, &owner, &(ttl as f64)]).await.map_err(pg_err("taking a lease"))?;
            tx.commit().await.map_err(pg_err("taking a lease"))?;
            Ok(Some(Lease { resource, owner, token: r.get(0), expires_at_ms: r.get(1) }))
        })
    }

    fn acquire_free(&self, resources: &[String], owner: &str, ttl: Duration, limit: usize) -> Result<Vec<Lease>, HostError> {
        let (resources, owner, ttl) = (resources.to_vec(), owner.to_string(), ttl_ms(ttl));
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.wait(|db| async move {
            let mut c = db.client().await?;
            let tx = c.transaction().await.map_err(pg_err("taking leases"))?;
            tx.execute(
                "INSERT INTO leases (resource, owner, token, expires_at)
                 SELECT r, NULL, 0, '-infinity' FROM unnest($1::text[]) AS r ORDER BY r ON CONFLICT DO NOTHING",
                &[&resources],
            )
            .await
            .map_err(pg_err("taking leases"))?;
            let rows = tx
                .query(
                    &format!(
                        "WITH free AS (
                            SELECT resource FROM leases
                            WHERE resource = ANY($1) AND (owner IS NULL OR expires_at <= clock_timestamp())
                            ORDER BY resource LIMIT $4 FOR UPDATE SKIP LOCKED)
                         UPDATE leases l SET owner = $2, token = nextval('lease_tokens'),
                            expires_at = clock_timestamp() + $3 * interval '1 millisecond', acquired_at = clock_timestamp(), renewed_at = NULL
                         FROM free WHERE l.resource = free.resource
                         RETURNING l.resource, l.token, {EXPIRES_MS}"
                    ),
                    &[&resources, &owner, &(ttl as f64), &limit],
                )
                .await
                .map_err(pg_err("taking leases"))?;
            tx.commit().await.map_err(pg_err("taking leases"))?;
            let mut leases: Vec<Lease> =
                rows.iter().map(|r| Lease { resource: r.get(0), owner: owner.clone(), token: r.get(1), expires_at_ms: r.get(2) }).collect();
            leases.sort_by(|a, b| a.resource.cmp(&b.resource));
            Ok(leases)
        })
    }

    fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Lease, HostError> {
        let (lease, ttl) = (lease.clone(), ttl_ms(ttl));
        self.wait(|db| async move {
            let c = db.client().await?;
            let row = c
                .query_opt(
                    &format!(
                        "UPDATE leases SET expires_at = clock_timestamp() + $4 * interval '1 millisecond', renewed_at = clock_timestamp()
                         WHERE resource = $1 AND owner = $2 AND token = $3 AND expires_at > clock_timestamp()
                         RETURNING {EXPIRES_MS}"
                    ),
                    &[&lease.resource, &lease.owner, &lease.token, &(ttl as f64)],
                )
                .await
                .map_err(pg_err("renewing a lease"))?;
            match row {
                Some(r) => Ok(Lease { expires_at_ms: r.get(0), ..lease }),
                None => {
                    let holder = c
                        .query_opt("SELECT owner FROM leases WHERE resource = $1 AND token <> $2", &[&lease.resource, &lease.token])
                        .await
                        .map_err(pg_err("renewing a lease"))?
                        .and_then(|r| r.get::<_, Option<String>>(0));
                    Err(lease.fence().lost(holder))
                }
            }
        })
    }

    fn release(&self, lease: &Lease) -> Result<(), HostError> {
        let lease = lease.clone();
        self.wait(|db| async move {
            let c = db.client().await?;
            c.execute(
                "UPDATE leases SET owner = NULL, expires_at = clock_timestamp() WHERE resource = $1 AND owner = $2 AND token = $3",
                &[&lease.resource, &lease.owner, &lease.token],
            )
            .await
            .map_err(pg_err("releasing a lease"))?;
            Ok(())
        })
    }

    fn list_leases(&self, prefix: &str) -> Result<Vec<LeaseInfo>, HostError> {
        // LIKE with the prefix's own wildcards escaped.
        let pattern = format!("{}%", prefix.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"));
        self.wait(|db| async move {
            let c = db.client().await?;
            let rows = c
                .query(
                    &format!(
                        "SELECT resource, owner, token, {EXPIRES_MS}, owner IS NOT NULL AND expires_at > clock_timestamp()
                         FROM leases WHERE resource LIKE $1 AND token > 0 ORDER BY resource"
                    ),
                    &[&pattern],
                )
                .await
                .map_err(pg_err("listing leases"))?;
            Ok(rows
                .iter()
                .map(|r| LeaseInfo { resource: r.get(0), owner: r.get(1), token: r.get(2), expires_at_ms: r.get(3), live: r.get(4) })
                .collect())
        })
    }

    fn renew_all(&self, leases: &[Lease], ttl: Duration) -> Result<Renewal, HostError> {
        if leases.is_empty() {
            return Ok(Renewal::default());
        }
        let (leases, ttl) = (leases.to_vec(), ttl_ms(ttl));
        self.wait(|db| async move {
            let c = db.client().await?;
            let resources: Vec<&str> = leases.iter().map(|l| l.resource.as_str()).collect();
            let owners: Vec<&str> = leases.iter().map(|l| l.owner.as_str()).collect();
            let tokens: Vec<i64> = leases.iter().map(|l| l.token).collect();
            let rows = c
                .query(
                    &format!(
                        "UPDATE leases l SET expires_at = clock_timestamp() + $4 * interval '1 millisecond', renewed_at = clock_timestamp()
                         FROM unnest($1::text[], $2::text[], $3::bigint[]) AS h(resource, owner, token)
                         WHERE l.resource = h.resource AND l.owner = h.owner AND l.token = h.token AND l.expires_at > clock_timestamp()
                         RETURNING l.resource, l.token, {EXPIRES_MS}"
                    ),
                    &[&resources, &owners, &tokens, &(ttl as f64)],
                )
                .await
                .map_err(pg_err("renewing leases"))?;
            let expiry: std::collections::HashMap<(String, i64), i64> = rows.iter().map(|r| ((r.get(0), r.get(1)), r.get(2))).collect();
            let mut out = Renewal::default();
            let mut lost = Vec::new();
            for l in leases {
                match expiry.get(&(l.resource.clone(), l.token)) {
                    Some(&at) => out.renewed.push(Lease { expires_at_ms: at, ..l }),
                    None => lost.push(l),
                }
            }
            if !lost.is_empty() {
                let names: Vec<&str> = lost.iter().map(|l| l.resource.as_str()).collect();
                let now: std::collections::HashMap<String, (Option<String>, i64)> = c
                    .query("SELECT resource, owner, token FROM leases WHERE resource = ANY($1)", &[&names])
                    .await
                    .map_err(pg_err("renewing leases"))?
                    .iter()
                    .map(|r| (r.get(0), (r.get(1), r.get(2))))
                    .collect();
                for l in lost {
                    let holder = now.get(&l.resource).filter(|(_, token)| *token != l.token).and_then(|(o, _)| o.clone());
                    out.lost.push((l, holder));
                }
            }
            Ok(out)
        })
    }

    fn heartbeat(&self, node: &str, ttl: Duration) -> Result<Heartbeat, HostError> {
        let (resource, owner, ttl) = (node_resource(node), node.to_string(), ttl_ms(ttl));
        self.wait(|db| async move {
            let mut c = db.client().await?;
            let tx = c.transaction().await.map_err(pg_err("renewing the node's heartbeat"))?;
            // A live heartbeat of this node keeps its token; an expired or released one gets a new one.
            let r = tx
                .query_one(
                    &format!(
                        "INSERT INTO leases (resource, owner, token, expires_at, acquired_at)
                         VALUES ($1, $2, nextval('lease_tokens'), clock_timestamp() + $3 * interval '1 millisecond', clock_timestamp())
                         ON CONFLICT (resource) DO UPDATE SET
                            token = CASE WHEN leases.owner = excluded.owner AND leases.expires_at > clock_timestamp()
                                         THEN leases.token ELSE excluded.token END,
                            acquired_at = CASE WHEN leases.owner = excluded.owner AND leases.expires_at > clock_timestamp()
                                         THEN leases.acquired_at ELSE excluded.acquired_at END,
                            owner = excluded.owner, expires_at = excluded.expires_at, renewed_at = clock_timestamp()
                         RETURNING token, {EXPIRES_MS}"
                    ),
                    &[&resource, &owner, &(ttl as f64)],
                )
                .await
                .map_err(pg_err("renewing the node's heartbeat"))?;
            let lease = Lease { resource, owner, token: r.get(0), expires_at_ms: r.get(1) };
            tx.execute(
                "DELETE FROM leases WHERE resource LIKE 'node:%' AND expires_at < clock_timestamp() - interval '1 day'",
                &[],
            )
            .await
            .map_err(pg_err("renewing the node's heartbeat"))?;
            let live: i64 = tx
                .query_one(
                    "SELECT count(*) FROM leases WHERE resource LIKE 'node:%' AND owner IS NOT NULL AND expires_at > clock_timestamp()",
                    &[],
                )
                .await
                .map_err(pg_err("counting live nodes"))?
                .get(0);
            tx.commit().await.map_err(pg_err("renewing the node's heartbeat"))?;
            Ok(Heartbeat { lease, live_nodes: usize::try_from(live).unwrap_or(1).max(1) })
        })
    }
}
