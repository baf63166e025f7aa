//! The renewer: keeps this node's leases and its heartbeat, on the runtime's worker threads (a
//! busy actors' thread never delays it).
//!
//! Every TTL / 3 it renews all held leases in one statement (`Leases::renew_all`) and the
//! heartbeat (`Leases::heartbeat`, which counts the live nodes). While a renewal waits for the
//! database, the local deadlines are still watched: a lease whose deadline (the start of its
//! last good renewal + TTL, minus a margin) passes is dropped and its actors stop, so a node cut
//! off from the database, or paused, stops all work before another node may take it over.

use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::LeaseNode;
use crate::store::postgres::Leases;

/// Runs until `stop` (cancelled after the actors stopped and the leases were released).
pub async fn run(node: Arc<LeaseNode>, stop: CancellationToken) {
    let every = node.ttl / 3;
    let mut next_renewal = Instant::now() + every;
    loop {
        // Until the next renewal, or a lease's local deadline if that comes first (a renewal
        // that failed leaves the leases to it).
        let wake = node.next_deadline().map_or(next_renewal, |d| d.min(next_renewal));
        tokio::select! {
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {}
            _ = stop.cancelled() => return,
        }
        // Woken late (paused, or a starved thread): what is overdue goes first.
        node.expire_overdue(Instant::now());
        if Instant::now() < next_renewal {
            continue;
        }
        next_renewal = Instant::now() + every;
        let started = Instant::now();
        let (store, leases, id, ttl) = (node.store.clone(), node.all_leases(), node.id.clone(), node.ttl);
        let work = tokio::task::spawn_blocking(move || {
            let renewal = store.renew_all(&leases, ttl)?;
            let hb = store.heartbeat(&id, ttl)?;
            Ok::<_, crate::error::HostError>((renewal, hb))
        });
        tokio::pin!(work);
        loop {
            let deadline = node.next_deadline().map(tokio::time::Instant::from_std);
            tokio::select! {
                r = &mut work => {
                    match r {
                        Ok(Ok((renewal, hb))) => {
                            node.renewed(renewal, started);
                            node.beat(hb);
                        }
                        Ok(Err(e)) => warn!(error = %e, "cannot renew the leases; the work under them stops if this lasts"),
                        Err(e) => warn!(error = %e, "the lease renewal failed"),
                    }
                    break;
                }
                _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => {
                    node.expire_overdue(Instant::now());
                }
                _ = stop.cancelled() => return,
            }
        }
    }
}
